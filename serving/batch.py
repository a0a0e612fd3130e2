"""`python -m serving.batch`: one batch-job runner's scoring process, which loads the model once and scores
mini-batches of files until its runner goes away.

Azure ML's batch contract: a scoring script's `init()` runs once, then `run(mini_batch)` once per
mini-batch with the local paths of its files, returning a pandas DataFrame or a list with one row per input
it scored (fewer rows than files: the others failed). A no-code MLflow model scores CSV and parquet files
row by row instead; a file it cannot read or predict is a failed item, and the other files of the
mini-batch are still scored.

The runner talks to it through two folders. In the inbox, which this process can only read, the runner
puts each mini-batch's files and then `request-{seq:08d}.json` (`{"index", "files", "names", "output"}`),
whole. In the outbox, the one folder of the host it may write, this process writes the part CSV to
`output`, then `reply-{seq:08d}.json` (`{"items", "items_failed", "rows", "error"?}`), whole. Once loaded
it writes `ready.json` there, or `failed.json` (`{"error"}`) if loading failed. Standard input
is not a channel: the sandbox launcher reads the launch request from it. What the scoring code prints, and
every traceback, goes to standard output and errors, which the runner keeps as the mini-batch's log.

A part CSV starts with one header line (empty when the rows have no column names); the job's merge writes
the first non-empty header once, then every part's rows. This process exits when its runner is gone (its
parent, or the process `--runner` names when the warm template forked it), so a killed worker leaves no
scoring process behind.

Django-free, like the rest of `serving`.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import os
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

POLL_S = (0.002, 0.05)  # first and longest wait between looks at the inbox
READY, FAILED = "ready.json", "failed.json"


def request_name(seq: int) -> str:
    return f"request-{seq:08d}.json"


def reply_name(seq: int) -> str:
    return f"reply-{seq:08d}.json"


def write_whole(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Write `path` with permissions `mode` beside itself and rename it into place, so a reader never
    sees half of it."""
    staging = path.with_name(f".{path.name}.tmp")
    staging.write_bytes(data)
    os.chmod(staging, mode)
    os.replace(staging, path)


def _csv_line(fields: list[Any]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow(fields)
    return buffer.getvalue()


class ScriptScorer:
    """A scoring script with Azure's batch contract: `init()` once, `run(mini_batch)` per mini-batch."""

    def __init__(self, script: Path, model_dir: Path, code_dir: Path) -> None:
        from serving.scoring_script import ScoringScript

        self.script = ScoringScript(script, model_dir, code_dir)

    def load(self) -> None:
        self.script.load()  # imports the script and calls its init(), as an online replica does

    def score(self, files: list[str], names: list[str], output: Path) -> dict[str, Any]:
        # The script's run(), as ScoringScript found it: batch calls it with the list of paths itself.
        result = self.script._run(list(files))
        header, lines = self._lines(result)
        with output.open("w", newline="") as handle:
            handle.write(_csv_line(header) if header else "\n")
            handle.writelines(lines)
        rows = len(lines)
        return {"items": len(files), "items_failed": max(0, len(files) - rows), "rows": rows}

    @staticmethod
    def _lines(result: Any) -> tuple[list[str], list[str]]:
        """(header, CSV lines) of what run() returned: a DataFrame with its columns, or a list with one
        item per line (a list or tuple item as CSV fields)."""
        if hasattr(result, "to_csv") and hasattr(result, "columns"):
            text = result.to_csv(index=False, header=False, lineterminator="\n")
            return [str(column) for column in result.columns], text.splitlines(keepends=True)
        if result is None:
            return [], []
        if isinstance(result, (str, bytes)) or not hasattr(result, "__iter__"):
            raise TypeError(
                f"run() returned {type(result).__name__}: a batch scoring script returns a pandas DataFrame "
                "or a list, with one row per input it scored."
            )
        lines = []
        for item in result:
            fields = list(item) if isinstance(item, (list, tuple)) else [item]
            lines.append(_csv_line(fields))
        return [], lines


class MlflowBatchScorer:
    """A no-code MLflow model scoring CSV and parquet files row by row: columns `file`, `row`, then the
    prediction (`prediction`, or one column per output)."""

    def __init__(self, model_dir: Path) -> None:
        from serving.mlflow_model import MlflowScorer, find_mlmodel_folder

        self.model = MlflowScorer(find_mlmodel_folder(model_dir))

    def load(self) -> None:
        self.model.load()

    @staticmethod
    def _read(path: str) -> Any:
        import pandas as pd

        suffix = Path(path).suffix.lower()
        if suffix in (".parquet", ".pq"):
            return pd.read_parquet(path)
        if suffix in (".csv", ".txt", ".tsv"):
            return pd.read_csv(path, sep="\t" if suffix == ".tsv" else ",")
        raise ValueError(f"{Path(path).name} is neither CSV nor parquet, the files a no-code model scores")

    def _predict(self, frame: Any) -> dict[str, list[Any]]:
        """The model's predictions for every row of `frame`, as output columns of equal length."""
        import numpy as np
        import orjson

        from serving.inputs import frame_input

        item = frame_input(frame, self.model.signature)
        if item is None:  # what only parsing checks and converts: the file's rows as a request's
            body = {
                "dataframe_split": {
                    "columns": [str(c) for c in frame.columns],
                    "data": frame.to_numpy().tolist(),
                }
            }
            item = self.model.parse(orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY))
        value = self.model.predictor.predict(item)
        if hasattr(value, "columns"):  # a DataFrame: one output column per column
            columns = {str(name): value[name].tolist() for name in value.columns}
        elif isinstance(value, dict):  # named outputs
            columns = {str(name): np.asarray(values).tolist() for name, values in value.items()}
        else:
            array = np.asarray(value)
            if array.ndim == 2 and array.shape[1] > 1:
                names = self._output_names(array.shape[1])
                columns = {name: array[:, i].tolist() for i, name in enumerate(names)}
            else:
                columns = {"prediction": array.reshape(len(frame)).tolist()}
        for name, values in columns.items():
            if len(values) != len(frame):
                raise ValueError(f"the model returned {len(values)} values of {name!r} for {len(frame)} rows")
        return columns

    def _output_names(self, count: int) -> list[str]:
        outputs = self.model.signature.outputs if self.model.signature else ()
        names = [getattr(spec, "name", None) for spec in outputs]
        if len(names) == count and all(names):
            return [str(name) for name in names]
        return [f"prediction_{i}" for i in range(count)]

    def score(self, files: list[str], names: list[str], output: Path) -> dict[str, Any]:
        header: list[str] | None = None
        rows = failed = 0
        with output.open("w", newline="") as handle:
            handle.write("\n")  # the header's place, rewritten once the columns are known
            writer = csv.writer(handle, lineterminator="\n")
            for path, name in zip(files, names, strict=True):
                try:
                    frame = self._read(path)
                    columns = self._predict(frame)
                except Exception:  # noqa: BLE001 - one bad file is one failed item, not a failed mini-batch
                    failed += 1
                    print(f"Failed to score {name}:", file=sys.stderr)
                    traceback.print_exc()
                    continue
                if header is None:
                    header = ["file", "row", *columns]
                values = list(columns.values())
                for row in range(len(frame)):
                    writer.writerow([name, row, *(column[row] for column in values)])
                rows += len(frame)
        if header is not None:
            body = output.read_text().split("\n", 1)[1]
            output.write_text(_csv_line(header) + body)
        return {"items": len(files), "items_failed": failed, "rows": rows}


def _wait_for(path: Path, runner_alive: Callable[[], bool]) -> bool:
    """Wait until `path` exists; False once the runner that started this process is gone."""
    pause = POLL_S[0]
    while not path.exists():
        if not runner_alive():
            return False
        time.sleep(pause)
        pause = min(pause * 2, POLL_S[1])
    return True


def _runner_watch(runner: str | None) -> Callable[[], bool]:
    """Whether the runner still runs: this process's parent, or, for a process the warm template forked
    (whose parent is the template), the runner named as `PID:START` (its start time in clock ticks, so a
    reused pid is not taken for it)."""
    if runner:
        from serving import processes

        pid, start = runner.split(":", 1)
        return lambda: processes.running(int(pid), start)
    parent = os.getppid()
    return lambda: os.getppid() == parent


def serve(scorer: Any, inbox: Path, outbox: Path, runner: str | None = None) -> int:
    """Load the model, then score each request the runner puts in `inbox`, answering in `outbox`, until
    the runner is gone."""
    runner_alive = _runner_watch(runner)
    try:
        scorer.load()
    except BaseException as exc:  # noqa: BLE001 - init() is user code: any failure is reported, then exit
        traceback.print_exc()
        error = f"Loading the model failed: {type(exc).__name__}: {exc}"
        write_whole(outbox / FAILED, json.dumps({"error": error}).encode())
        return 1
    sys.stdout.flush()
    write_whole(outbox / READY, b"{}")
    seq = 0
    while _wait_for(inbox / request_name(seq), runner_alive):
        request = json.loads((inbox / request_name(seq)).read_text())
        files = request["files"]
        try:
            reply = scorer.score(files, request.get("names") or files, Path(request["output"]))
        except Exception as exc:  # noqa: BLE001 - run() is user code: its failure fails the mini-batch
            traceback.print_exc()
            reply = {"items": len(files), "items_failed": len(files), "rows": 0}
            reply["error"] = f"run() raised {type(exc).__name__}: {exc}"
        sys.stdout.flush()
        sys.stderr.flush()
        write_whole(outbox / reply_name(seq), json.dumps(reply).encode())
        seq += 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m serving.batch", description=__doc__.split("\n")[0])
    parser.add_argument("--inbox", required=True, type=Path, help="where requests come, read-only")
    parser.add_argument("--outbox", required=True, type=Path, help="where answers and parts go")
    parser.add_argument("--model-dir", required=True, type=Path)
    parser.add_argument("--code", type=Path)
    parser.add_argument("--scoring-script")
    parser.add_argument("--logging-level", default="info", help="the deployment's logging_level")
    parser.add_argument("--runner", help="PID:START of the runner to outlive by no more than a poll")
    args = parser.parse_args(argv)
    # Azure's logging_level: how much of what the scoring code logs reaches the mini-batches' logs.
    logging.basicConfig(
        level=getattr(logging, args.logging_level.upper(), logging.INFO),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    os.environ.setdefault("AZUREML_MODEL_DIR", str(args.model_dir))
    if args.code is not None and args.scoring_script:
        scorer: Any = ScriptScorer(args.code / args.scoring_script, args.model_dir, args.code)
    else:
        try:
            scorer = MlflowBatchScorer(args.model_dir)
        except Exception as exc:  # noqa: BLE001 - no MLmodel, unreadable MLmodel: said to the runner
            write_whole(args.outbox / FAILED, json.dumps({"error": str(exc)}).encode())
            return 1
    return serve(scorer, args.inbox, args.outbox, args.runner)


if __name__ == "__main__":
    sys.exit(main())
