"""Looking after a baseline store: list its entries and prune stale or old ones (``falw-ray baselines``).

Everything shown is read from each entry's meta.json (and the sizes of its files); an entry written
before keys carried the code version has no ``code_version`` there and shows "-". Removal goes
through :meth:`falw_ray.store.BaselineStore.remove`: under the entry's lock, whole or not at all.
"""
from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from filelock import Timeout

from . import scenario as _scenario
from .store import META, BaselineStore

MISSING = "-"
"""What a column shows when meta.json does not say (entries written before that field existed)."""


@dataclass(frozen=True)
class Entry:
    """One stored baseline as its meta.json describes it."""

    role: str
    key: str
    dataset: str
    model: str
    forget: str
    seed: str
    code_version: str
    size: int
    created: float
    """When it was written (seconds since the epoch): meta.json's ``created``, else meta.json's mtime."""
    problem: str = ""
    """Why meta.json could not be read ("" when it could)."""

    def age(self, now: float) -> float:
        return max(0.0, now - self.created)

    def stale(self, version: str) -> bool:
        return self.code_version != version


def _size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def _forget_label(forget: object) -> str:
    from pydantic import ValidationError

    from .scenario import ForgetSpec

    if not isinstance(forget, dict):
        return MISSING  # an original model: its key leaves the forget set out
    try:
        return ForgetSpec(**forget).label
    except (ValidationError, TypeError):
        return f"{forget.get('kind', '?')}?"  # a forget set this code no longer accepts


def _dataset_label(scenario: dict) -> str:
    """The data set, with the generator options that differ from its defaults (as Scenario.name shows them)."""
    from pydantic import ValidationError

    from .data.registry import data_options

    name = str(scenario.get("dataset", MISSING))
    options = scenario.get("data_options") or {}
    try:
        default = data_options(name, None).model_dump()
        return name + "".join(f"-{k}{v:g}" for k, v in options.items() if default.get(k) != v)
    except (ValidationError, ValueError, KeyError, TypeError):
        return name + ("+options" if options else "")


def read_entry(folder: Path) -> Entry:
    """An entry from its folder ``root/<role>/<key>``; a missing or unreadable meta.json gives a row
    that says so (such an entry is rebuilt when next used, and counts as stale)."""
    role, key = folder.parent.name, folder.name
    meta_path = folder / META
    size = _size(folder)
    try:
        meta = json.loads(meta_path.read_text())
        if not isinstance(meta, dict):
            raise ValueError("not a JSON object")
    except FileNotFoundError:
        return Entry(role, key, MISSING, MISSING, MISSING, MISSING, MISSING, size, folder.stat().st_mtime,
                     problem="no meta.json")
    except (OSError, ValueError) as e:  # json.JSONDecodeError is a ValueError
        return Entry(role, key, MISSING, MISSING, MISSING, MISSING, MISSING, size, meta_path.stat().st_mtime,
                     problem=f"unreadable meta.json ({e})")
    scenario = meta.get("scenario") if isinstance(meta.get("scenario"), dict) else {}
    created = meta_path.stat().st_mtime
    if isinstance(meta.get("created"), str):
        try:
            created = datetime.fromisoformat(meta["created"]).timestamp()
        except ValueError:
            pass  # a malformed time: the file's own is the best there is
    return Entry(
        role=role, key=key, dataset=_dataset_label(scenario) if scenario else MISSING,
        model=str(scenario.get("model", MISSING)), forget=_forget_label(scenario.get("forget")),
        seed=str(scenario.get("seed", MISSING)), code_version=str(meta.get("code_version", MISSING)),
        size=size, created=created,
    )


def entries(root: str | Path) -> list[Entry]:
    """Every entry under ``root`` (``root/<role>/<key>/``), sorted by role, data set, model, forget set,
    seed and key. Hidden folders (a save or removal in progress) and lock files are not entries."""
    root = Path(root)
    found = []
    for role in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for folder in role.iterdir():
            if folder.is_dir() and not folder.name.startswith("."):
                try:
                    found.append(read_entry(folder))
                except FileNotFoundError:
                    continue  # removed while we looked
    return sorted(found, key=lambda e: (e.role, e.dataset, e.model, e.forget, _seed_order(e.seed), e.key))


def _seed_order(seed: str) -> tuple[int, str]:
    return (int(seed), "") if seed.isdigit() else (1 << 62, seed)


def human_size(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" or n >= 100 else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"  # unreachable; keeps type checkers content


def human_age(seconds: float) -> str:
    for unit, span in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= span:
            return f"{seconds / span:.0f}{unit}"
    return f"{seconds:.0f}s"


COLUMNS = ("role", "key", "dataset", "model", "forget", "seed", "code", "size", "age")


def _cells(e: Entry, now: float) -> tuple[str, ...]:
    return (e.role, e.key, e.dataset, e.model, e.forget, e.seed, e.code_version, human_size(e.size),
            human_age(e.age(now)))


def format_entries(found: Iterable[Entry], now: float | None = None) -> list[str]:
    """One aligned line per entry under a header line; entries whose meta.json is unreadable say why."""
    now = time.time() if now is None else now
    found = list(found)
    rows = [COLUMNS, *(_cells(e, now) for e in found)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    for i, e in enumerate(found, start=1):
        if e.problem:
            lines[i] += f"  ({e.problem})"
    return lines


def describe(e: Entry, now: float) -> str:
    """An entry in one line, for prune's report."""
    what = " ".join(x for x in (e.dataset, e.model, e.forget, f"s{e.seed}") if x != MISSING and x != f"s{MISSING}")
    return (f"{e.role}/{e.key} ({what or e.problem or 'no scenario'}; code {e.code_version}; "
            f"{human_size(e.size)}; {human_age(e.age(now))} old)")


@dataclass
class PruneReport:
    removed: list[Entry]
    in_use: list[Entry]
    kept: int

    @property
    def freed(self) -> int:
        return sum(e.size for e in self.removed)


def select(found: Iterable[Entry], stale: bool, older_than_days: float | None, version: str,
           now: float) -> list[Entry]:
    """The entries matching every filter given: --stale (code version not ``version``) and
    --older-than (written more than that many days ago)."""
    if not stale and older_than_days is None:
        raise ValueError("say what to prune: --stale, --older-than DAYS, or both")
    return [e for e in found
            if (not stale or e.stale(version))
            and (older_than_days is None or e.age(now) > older_than_days * 86400)]


def prune(root: str | Path, stale: bool = False, older_than_days: float | None = None, dry_run: bool = False,
          say: Callable[[str], None] = print, now: float | None = None) -> PruneReport:
    """Remove the entries matching the filters (see :func:`select`), one by one under each entry's
    lock, saying what was removed (or, with ``dry_run``, what would be). An entry whose lock is held
    (being built, saved or read right now) is left alone and reported as in use."""
    now = time.time() if now is None else now
    version = _scenario.BASELINE_CODE_VERSION
    found = entries(root)
    chosen = select(found, stale, older_than_days, version, now)
    store = BaselineStore(root)
    removed, in_use = [], []
    for e in chosen:
        if dry_run:
            say(f"would remove {describe(e, now)}")
            removed.append(e)
            continue
        try:
            gone = store.remove(e.role, e.key, timeout=0)
        except Timeout:
            say(f"in use, kept {describe(e, now)}")
            in_use.append(e)
            continue
        if gone:
            say(f"removed {describe(e, now)}")
            removed.append(e)
    return PruneReport(removed, in_use, kept=len(found) - len(removed))
