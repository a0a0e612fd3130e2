"""`studio webhook create|list|test|delete` against a live server, delivering to a real receiver."""

import json

import pytest
from click.testing import CliRunner

from studio.cli.main import cli
from studio.tests.webhook_receiver import loopback_receiver


@pytest.fixture
def receiver(settings):
    with loopback_receiver(settings) as receiver:
        yield receiver


@pytest.fixture
def studio(live_server, team, tmp_path, monkeypatch, eager_jobs):
    monkeypatch.setenv("STUDIO_CONFIG", str(tmp_path / "config.json"))

    def run(*args: str, as_: str = "admin", fails: bool = False, input: str | None = None):  # noqa: A002
        env = {"STUDIO_URL": live_server.url, "STUDIO_TOKEN": getattr(team, as_).token}
        result = CliRunner(env=env).invoke(cli, list(args), input=input, catch_exceptions=False)
        assert (result.exit_code != 0) == fails, result.output
        return result

    return run


def test_an_admin_creates_lists_tests_and_deletes_a_webhook(studio, receiver):
    created = json.loads(
        studio(
            "webhook", "create", "--name", "ci", "--url", receiver.url,
            "--event", "studio.model.*", "--event", "studio.webhook.test", "-o", "json",
        ).stdout
    )  # fmt: skip
    receiver.secret = created["secret"]
    assert created["events"] == ["studio.model.*", "studio.webhook.test"]

    table = studio("webhook", "list").stdout
    assert "ci" in table and receiver.url in table
    assert [hook["name"] for hook in json.loads(studio("webhook", "list", "-o", "json").stdout)] == ["ci"]

    tested = json.loads(studio("webhook", "test", "--name", "ci", "-o", "json").stdout)
    assert tested["state"] == "succeeded" and tested["response_code"] == 200
    assert [event["type"] for event in receiver.accepted] == ["studio.webhook.test"]
    assert receiver.attempts[0].verified

    receiver.failures = None
    failed = studio("webhook", "test", "--name", "ci", fails=True)
    assert "The receiver answered 500" in failed.output

    studio("webhook", "delete", "--name", "ci")
    assert "No webhook" in studio("webhook", "list").stdout


def test_the_cli_says_what_is_wrong(studio, receiver):
    refused = studio("webhook", "create", "--name", "x", "--url", "http://10.1.2.3/hook", fails=True)
    assert "allow-list" in refused.output or "private" in refused.output
    denied = studio("webhook", "list", as_="contributor", fails=True)
    assert "role" in denied.output.lower()
    missing = studio("webhook", "delete", "--name", "nope", fails=True)
    assert "no webhook 'nope'" in missing.output


def test_a_chosen_secret_comes_from_a_file_or_standard_input_never_the_command_line(
    studio, receiver, tmp_path
):
    chosen = "the-receivers-own-secret-0123456789abcdef"
    created = json.loads(
        studio(
            "webhook", "create", "--name", "ci", "--url", receiver.url, "--secret-file", "-", "-o", "json",
            input=chosen + "\n",
        ).stdout
    )  # fmt: skip
    assert created["secret"] == chosen
    receiver.secret = chosen
    assert json.loads(studio("webhook", "test", "--name", "ci", "-o", "json").stdout)["state"] == "succeeded"
    assert receiver.attempts[-1].verified

    short = tmp_path / "secret"
    short.write_text("too-short\n")
    refused = studio("webhook", "create", "--name", "cd", "--url", receiver.url, "--secret-file", str(short),
                     fails=True)  # fmt: skip
    assert "at least 32 characters" in refused.output
    on_the_command_line = studio("webhook", "create", "--name", "cd", "--url", receiver.url, "--secret", chosen,
                                 fails=True)  # fmt: skip
    assert "No such option '--secret'" in on_the_command_line.output
    shown = studio("webhook", "list", "-o", "json").stdout
    assert chosen not in shown and "…cdef" in shown
