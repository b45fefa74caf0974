"""The study's one durable record of its completed trials, written by the driver (:class:`Recorder`).

Its first line is a header naming the study it belongs to (see :func:`header`): the study file's
content hash, the falw_ray version, the settings that decide its trials, and an id that tags the
study's MLflow run, so that resume and sync can tell whether the study changed and which MLflow run
(in whatever store) mirrors it. Then a trial's entry (its stage, its config, the order the searcher
created it in, its status, its last result and every result it reported) is appended and synced to
disk the moment Tune completes it, before anything else is written about it. Resume reads this file
alone: the searcher and early stopping's rungs replay it, the tables are built from it, and the
MLflow runs are rebuilt from it where they are missing or partial. Tune's own experiment state and
the MLflow store are caches of it, never read back.
"""
from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path

def journal_path(storage: str | os.PathLike, study: str) -> Path:
    """Where a study's journal lives under its storage: the one place this is spelled (the runner,
    ``falw-ray slurm --status`` and a Slurm job's progress check all read it here)."""
    return Path(storage) / "ray" / f"{study}.finished.jsonl"


TRIAL_FIELDS = ("scenarios", "methods", "search", "early_stopping", "selection")
"""The study settings that decide which trials it runs and what each computes; ``search.max_concurrent``
(how many run at once) excepted. The final seeds are compared on their own: more may be added."""


def header(spec, digest: str, version: str, tracking_uri: str, experiment: str) -> dict:
    """The journal's first line: which study (and which version of its file) wrote it."""
    trials = spec.model_dump(mode="json", include=set(TRIAL_FIELDS))
    trials["search"].pop("max_concurrent", None)
    return {"journal": uuid.uuid4().hex, "study": spec.name, "sha256": digest, "falw_ray": version,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "trials": trials,
            "final_seeds": spec.final_seeds(), "tracking_uri": tracking_uri, "experiment": experiment}


def _first_difference(old, new, where: str = "") -> str | None:
    """The first field (dotted path) where two JSON values differ, with both values."""
    if isinstance(old, dict) and isinstance(new, dict):
        for k in [*old, *(k for k in new if k not in old)]:
            found = _first_difference(old.get(k), new.get(k), f"{where}.{k}" if where else k)
            if found:
                return found
        return None
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        for i, (a, b) in enumerate(zip(old, new)):
            if found := _first_difference(a, b, f"{where}[{i}]"):
                return found
        return None
    return None if old == new else f"{where}: {json.dumps(old)} -> {json.dumps(new)}"


def changes(old: dict, new: dict) -> tuple[str | None, list[str]]:
    """(the change that alters the study's trials, or None; the changes that do not, each stated).

    A journal written before headers existed has nothing to compare: stated, not refused."""
    if not old:
        return None, ["the journal predates headers: the study file is not compared with it"]
    if (trial_change := _first_difference(old["trials"], new["trials"])) is not None:
        return trial_change, []
    seeds, now = old["final_seeds"], new["final_seeds"]
    if now[:len(seeds)] != seeds:
        return f"final seeds: {seeds} -> {now} (only adding seeds keeps the runs made)", []
    notes = []
    if len(now) > len(seeds):
        notes.append(f"final seeds {seeds} -> {now}: {len(now) - len(seeds)} more final run(s) per cell")
    for key, what in (("tracking_uri", "tracking URI"), ("experiment", "MLflow experiment"),
                      ("falw_ray", "falw_ray version")):
        if old.get(key) != new.get(key):
            notes.append(f"{what} {old.get(key)} -> {new.get(key)}")
    if old["sha256"] != new["sha256"] and not notes:
        notes.append("the study file changed in no setting that decides its trials")
    return None, notes


class Journal:
    """A header line (see :func:`header`), then one JSON line per completed trial (see :func:`entry`).

    Nothing here deletes a journal or removes a line it recorded: a study started over sets the old
    one aside, and a failed append takes back only the bytes it wrote itself."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def start(self, head: dict) -> None:
        """Create the journal holding its header alone; an existing journal is never overwritten
        (the header reaches the file whole, through a synced temporary file linked into place)."""
        tmp = self.path.with_name(f".{self.path.name}.{uuid.uuid4().hex[:8]}.tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "wb") as f:
                f.write(json.dumps(head).encode() + b"\n")
                f.flush()
                os.fsync(f.fileno())
            os.link(tmp, self.path)
        except FileExistsError:
            raise FileExistsError(f"{self.path}: a journal is already there; it is never overwritten") from None
        except OSError as e:
            raise OSError(f"{self.path}: could not start the journal ({e.strerror or e})") from None
        finally:
            tmp.unlink(missing_ok=True)

    def header(self) -> dict | None:
        """The header (first line) of the journal, or None: no journal, or one written before headers."""
        try:
            with open(self.path, "rb") as f:
                first = json.loads(f.readline() or b"null")
        except (FileNotFoundError, json.JSONDecodeError):
            return None
        return first if isinstance(first, dict) and "journal" in first else None

    def set_aside(self) -> Path:
        """Rename the journal beside itself (``<name>.<UTC time>.jsonl``), so a new study starts an
        empty one while every earlier trial stays on disk. Returns the new name."""
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(self.path.stat().st_mtime))
        n = 0
        while (aside := self.path.with_name(f"{self.path.stem}.{stamp}{f'-{n}' if n else ''}{self.path.suffix}")).exists():
            n += 1  # never onto an earlier one
        os.rename(self.path, aside)
        return aside

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
