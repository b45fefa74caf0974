"""Lines for a person: progress on stderr (or none), and an error in one line."""
from __future__ import annotations

import difflib
import sys
from collections.abc import Iterable


def say(msg: str) -> None:
    print(f"falw-ray: {msg}", file=sys.stderr, flush=True)


def silent(msg: str) -> None:
    """``say`` for a caller that asked for no progress."""


def printer(progress: bool):
    return say if progress else silent


def first_line(e: BaseException, limit: int = 200) -> str:
    """An error's first line (at most ``limit`` characters), or its type when it says nothing."""
    text = str(e).strip()
    return text.splitlines()[0][:limit] if text else type(e).__name__


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` naming the choice closest to a mistyped ``name`` (case aside), or ""
    when none is close: a message that lists every choice still points at the likely one."""
    by_lower = {c.lower(): c for c in choices}
    close = difflib.get_close_matches(name.lower(), list(by_lower), n=1, cutoff=0.6)
    return f" (did you mean {by_lower[close[0]]!r}?)" if close else ""
