"""A durable record of the trials a study stage has finished, written by the driver.

Tune saves its experiment state after each controller step and copies it to storage in the
background, so a driver killed right after a trial finished may restore a state in which that
trial is still running. Its last result, appended here (and flushed to disk) before its MLflow run
is marked FINISHED, lets a resumed study replay the trial instead of running it again.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from ray.tune.result import AUTO_RESULT_KEYS

TUNE_KEYS = frozenset(AUTO_RESULT_KEYS) | {"trial_id", "done", "experiment_tag", "should_checkpoint"}
"""Keys Tune adds to every result: a replayed result must not carry them back in."""


def trial_result(result: dict) -> dict:
    """What the trial itself reported, as JSON-safe values."""
    return {k: v for k, v in result.items() if k not in TUNE_KEYS and _plain(v)}


def _plain(v) -> bool:
    return v is None or isinstance(v, (str, int, bool, float, list))


class Journal:
    """One JSON line per finished trial: ``{"trial_id": ..., "result": {...}}``."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def reset(self) -> None:
        self.path.unlink(missing_ok=True)

    def append(self, trial_id: str, result: dict) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = json.dumps({"trial_id": trial_id, "result": trial_result(result)}).encode() + b"\n"
        with open(self.path, "ab+") as f:
            if f.seek(0, os.SEEK_END) > 0:
                f.seek(-1, os.SEEK_END)
                if f.read(1) != b"\n":  # a line cut short by a crash: start on a line of our own
                    line = b"\n" + line
            f.write(line)
            f.flush()
            os.fsync(f.fileno())

    def load(self) -> dict[str, dict]:
        """trial id -> its last result; a line cut short by a crash is ignored."""
        done: dict[str, dict] = {}
        if not self.path.exists():
            return done
        for line in self.path.read_text().splitlines():
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue
            done[entry["trial_id"]] = entry["result"]
        return done
