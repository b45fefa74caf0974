"""The study's one durable record of its completed trials, written by the driver.

A trial's entry (its stage, its config, the order the searcher created it in, its status, its last
result and every result it reported) is appended and synced to disk the moment Tune completes it,
before anything else is written about it. Resume reads this file alone: the searcher replays it,
the tables are built from it, and the MLflow runs are rebuilt from it where they are missing or
partial. Tune's own experiment state and the MLflow store are caches of it, never read back.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from ray.tune.result import AUTO_RESULT_KEYS

TUNE_KEYS = frozenset(AUTO_RESULT_KEYS) | {"trial_id", "done", "experiment_tag", "should_checkpoint"}
"""Keys Tune adds to every result: the record keeps what the trial itself reported."""


def trial_result(result: dict) -> dict:
    """What the trial itself reported, as JSON-safe values."""
    return {k: v for k, v in result.items() if k not in TUNE_KEYS and _plain(v)}


def _plain(v) -> bool:
    return v is None or isinstance(v, (str, int, bool, float, list))


def entry(trial_id: str, stage: str, config: dict, seq: int, status: str, result: dict | None,
          history: list[dict] | None = None, error: str | None = None) -> dict:
    """One completed trial as the journal keeps it."""
    return {"trial_id": trial_id, "stage": stage, "config": config, "seq": seq, "status": status,
            "result": trial_result(result or {}), "history": [trial_result(r) for r in history or []],
            **({"error": error} if error else {})}


class Journal:
    """One JSON line per completed trial (see :func:`entry`)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def reset(self) -> None:
        self.path.unlink(missing_ok=True)

    def append(self, record: dict) -> None:
        """Append and fsync. A failed write (a full disk) is taken back, so the file holds exactly
        the trials the study knows are recorded, and the error names the file and the trial."""
        line = json.dumps(record).encode() + b"\n"
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "ab+") as f:
                end = f.seek(0, os.SEEK_END)
                if end > 0:
                    f.seek(-1, os.SEEK_END)
                    if f.read(1) != b"\n":  # a line cut short by a crash: start on a line of our own
                        line = b"\n" + line
                try:
                    f.write(line)
                    f.flush()
                    os.fsync(f.fileno())
                except OSError:
                    f.truncate(end)
                    raise
        except OSError as e:
            raise OSError(f"{self.path}: could not record trial {record.get('trial_id')} "
                          f"({e.strerror or e})") from None

    def load(self) -> dict[str, dict]:
        """trial id -> its entry, in the order they were recorded; a line cut short by a crash
        (the one write that can be torn) is ignored, so that trial runs again."""
        done: dict[str, dict] = {}
        if not self.path.exists():
            return done
        for line in self.path.read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict) and "trial_id" in record and "stage" in record:
                done[record["trial_id"]] = record
        return done
