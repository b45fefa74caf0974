"""Lines for a person: progress on stderr (or none), and an error in one line."""
from __future__ import annotations

import sys


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
