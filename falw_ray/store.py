"""A content-addressed store of trained baselines on disk (or shared storage).

Entries live at ``root/<role>/<key>/`` and are written whole or not at all: files go to a
temporary folder that is renamed into place under a lock, and the weights carry a sha256
that is checked on every read, so a truncated or corrupted entry is rebuilt, never used.
Keys carry the version of the code that trains and evaluates baselines
(falw_ray.scenario.BASELINE_CODE_VERSION), and each entry's meta.json records it with the time it
was written: ``falw-ray baselines list`` shows them, ``falw-ray baselines prune`` removes entries
(each under the entry's lock, whole or not at all).
"""
from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
import tempfile
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from .lazy import torch
from filelock import FileLock

from . import scenario as _scenario

WEIGHTS, META = "weights.pt", "meta.json"
DEFAULT_STORE = Path("falw_results") / "baselines"
"""Where studies keep baselines with their default storage; the Python API and the CLI share it."""


@dataclass
class Trained:
    """One trained baseline model (its weights as arrays) and how long its training took: what an
    entry holds."""

    state: dict[str, np.ndarray]
    seconds: float


class CorruptEntry(RuntimeError):
    """A stored entry whose files do not match their checksum."""


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class BaselineStore:
    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    def path(self, role: str, key: str) -> Path:
        return self.root / role / key

    def lock(self, role: str, key: str, timeout: float = -1) -> FileLock:
        """The entry's lock (a file beside it): held while an entry is built, saved or removed."""
        return FileLock(str(self.path(role, key)) + ".lock", timeout=timeout)

    def load(self, role: str, key: str) -> Trained | None:
        """The stored entry, None when absent; raises CorruptEntry when it fails its checksum."""
        entry = self.path(role, key)
        meta_path, weights = entry / META, entry / WEIGHTS
        if not meta_path.exists():
            return None
        try:
            meta = json.loads(meta_path.read_text())
            ok = weights.exists() and _sha256(weights) == meta["sha256"]
        except (json.JSONDecodeError, KeyError, OSError) as e:
            raise CorruptEntry(f"{entry}: unreadable metadata ({e})") from None
        if not ok:
            raise CorruptEntry(f"{entry}: {WEIGHTS} does not match its checksum")
        state = torch.load(weights, map_location="cpu", weights_only=True)
        return Trained({k: v.numpy() for k, v in state.items()}, float(meta["seconds"]))

    def save(self, role: str, key: str, trained: Trained, info: dict | None = None) -> Path:
        """Write an entry atomically: a reader sees the old entry, the new one, or none.

        meta.json records the role, key, training seconds, the weights' sha256, ``code_version`` (this
        code's BASELINE_CODE_VERSION, which the caller's key was made with) and ``created`` (UTC), then
        ``info`` (the caller's: the scenario; a ``code_version`` there wins, for tools copying entries)."""
        final = self.path(role, key)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=final.parent))
        try:
            torch.save({k: torch.from_numpy(np.array(v, order="C", copy=True)) for k, v in trained.state.items()}, tmp / WEIGHTS)
            meta = {"role": role, "key": key, "seconds": trained.seconds, "sha256": _sha256(tmp / WEIGHTS),
                    "code_version": _scenario.BASELINE_CODE_VERSION,
                    "created": datetime.now(timezone.utc).isoformat(timespec="seconds"), **(info or {})}
            (tmp / META).write_text(json.dumps(meta, indent=1, sort_keys=True))
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
        except (OSError, RuntimeError, TypeError, ValueError, pickle.PicklingError) as e:
            # OSError: the disk (full, read-only, quota); RuntimeError: torch's writer failing on it;
            # TypeError / ValueError / PicklingError: a state or info that cannot be serialised.
            shutil.rmtree(tmp, ignore_errors=True)
            raise OSError(f"{final}: could not write the baseline entry ({type(e).__name__}: {e}); "
                          "nothing was stored") from e
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return final

    def remove(self, role: str, key: str, timeout: float = 0) -> bool:
        """Remove an entry whole, under its lock: it is renamed out of place in one step (a reader sees
        the entry or none; a later get_or_train rebuilds it), then deleted. Returns False when there
        was no entry; raises filelock.Timeout when the lock is held longer than ``timeout`` seconds
        (the entry is being built or read: in use)."""
        entry = self.path(role, key)
        with self.lock(role, key, timeout):
            if not entry.is_dir():
                return False
            trash = entry.parent / f".{key}.removed-{uuid.uuid4().hex[:8]}"
            os.replace(entry, trash)
        shutil.rmtree(trash)
        return True

    def attach(self, role: str, key: str, files: dict[str, bytes]) -> None:
        """Add derived files (metrics, split indices) to an entry, each written atomically."""
        entry = self.path(role, key)
        for name, data in files.items():
            fd, tmp = tempfile.mkstemp(prefix=f".{name}.", dir=entry)
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                os.replace(tmp, entry / name)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise

    def get_or_train(
        self, role: str, key: str, train: Callable[[], Trained], info: dict | None = None,
        log: Callable[[str], None] | None = None,
    ) -> tuple[Trained, str]:
        """The stored entry, or one trained now and saved; a lock keeps concurrent builders from
        training the same entry twice. Returns (entry, "hit" | "trained" | "rebuilt")."""
        (self.root / role).mkdir(parents=True, exist_ok=True)
        with self.lock(role, key):
            status = "trained"
            try:
                found = self.load(role, key)
                if found is not None:
                    return found, "hit"
            except CorruptEntry as e:
                if log:
                    log(f"{e}; rebuilding it")
                status = "rebuilt"
            trained = train()
            self.save(role, key, trained, info)
            return trained, status
