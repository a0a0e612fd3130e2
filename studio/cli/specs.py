"""Azure ML CLI v2 YAML specs (`-f model.yml`, `-f env.yml`), read as `az ml` reads them.

`$schema` is ignored, relative paths resolve against the YAML file's folder, and a field Studio cannot
honour is reported as a warning rather than dropped silently.
"""

from pathlib import Path
from typing import Any

from studio.cli.errors import CliError
from studio.cli.output import note


class Spec:
    """One YAML spec: its fields and the folder its relative paths start from."""

    def __init__(self, path: Path, fields: dict[str, Any]):
        self.path = path
        self.fields = fields

    def get(self, key: str, default: Any = None) -> Any:
        return self.fields.get(key, default)

    def local_path(self, key: str) -> Path | None:
        """The field as a path on this machine, relative to the YAML file's folder."""
        value = self.fields.get(key)
        if value is None:
            return None
        if not isinstance(value, str):
            raise CliError(f"{self.path}: '{key}' must be a path, not {value!r}.")
        if value.startswith(("azureml:", "http://", "https://")):
            raise CliError(f"{self.path}: '{key}' must be a local path; Studio cannot fetch {value!r}.")
        return (self.path.parent / value.removeprefix("file:")).resolve()

    def text_map(self, key: str) -> dict[str, str]:
        """A key: value mapping with string values (YAML turns `accuracy: 0.9` into a number)."""
        value = self.fields.get(key) or {}
        if not isinstance(value, dict):
            raise CliError(f"{self.path}: '{key}' must be a mapping of key: value.")
        return {str(k): "" if v is None else str(v) for k, v in value.items()}


def read_yaml(path: Path, what: str) -> Any:
    """The YAML document in `path`; `what` names the file in messages ("the conda file")."""
    # Imported here: only `-f` needs a YAML parser, and it is slow to import.
    import yaml

    try:
        return yaml.safe_load(path.read_text())
    except OSError as exc:
        raise CliError(f"Cannot read {what} {path}: {exc.strerror}.") from None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise CliError(f"{what.capitalize()} {path} is not valid YAML: {exc}") from None


def load_spec(path: Path, known: set[str]) -> Spec:
    """Read the YAML spec; warn about each field outside `known` (and not `$schema`)."""
    fields = read_yaml(path, "the spec file")
    if not isinstance(fields, dict):
        raise CliError(f"{path} must be a YAML mapping of fields (name, version, ...).")
    fields.pop("$schema", None)
    for field in sorted(set(fields) - known):
        note(f"Warning: {path.name}: field '{field}' is not supported by Studio and is ignored.")
    return Spec(path.resolve(), {key: value for key, value in fields.items() if key in known})
