"""Lines for a person: progress on stderr (or none), and an error in one line; all of them fitted to
the terminal's width (``COLUMNS`` when set, else the terminal's own, else :data:`DEFAULT_WIDTH`)."""
from __future__ import annotations

import difflib
import shutil
import sys
import textwrap
from collections.abc import Iterable

PREFIX = "falw-ray: "
DEFAULT_WIDTH = 100
"""Columns a line may take when the output is no terminal and ``COLUMNS`` is not set (a log file, CI)."""
MIN_WIDTH = 40
"""Narrower terminals get lines of this width: below it no table reads well whatever is cut."""
ELLIPSIS = "…"


def width() -> int:
    """The terminal's width in columns, ``COLUMNS`` first (see :data:`DEFAULT_WIDTH`, :data:`MIN_WIDTH`)."""
    return max(MIN_WIDTH, shutil.get_terminal_size((DEFAULT_WIDTH, 24)).columns)


def wrap(text: str, columns: int, indent: str = "  ") -> list[str]:
    """Each line of ``text`` broken at spaces into lines of at most ``columns`` characters; a
    continuation keeps its line's own indentation plus ``indent``. A word longer than a line (a
    path, a URL) stays whole: copied, it still works."""
    out = []
    for line in text.splitlines() or [""]:
        lead = line[: len(line) - len(line.lstrip(" "))]
        if len(line) <= columns:
            out.append(line)
            continue
        out += textwrap.wrap(line.strip(" "), columns, initial_indent=lead, subsequent_indent=lead + indent,
                             break_long_words=False, break_on_hyphens=False) or [line]
    return out


def say(msg: str) -> None:
    """``msg`` on stderr after :data:`PREFIX`, wrapped to the terminal; continuations under the text."""
    cols = width()
    lines = wrap(msg, cols - len(PREFIX))
    pad = " " * len(PREFIX)
    print("\n".join((PREFIX if i == 0 else pad) + line for i, line in enumerate(lines)),
          file=sys.stderr, flush=True)


def silent(msg: str) -> None:
    """``say`` for a caller that asked for no progress."""


def printer(progress: bool):
    return say if progress else silent


def first_line(e: BaseException, limit: int = 200) -> str:
    """An error's first line (at most ``limit`` characters), or its type when it says nothing."""
    text = str(e).strip()
    return text.splitlines()[0][:limit] if text else type(e).__name__


def shorten(name: str, room: int, seps: str = "-_") -> str:
    """``name`` in at most ``room`` characters: whole parts (split at ``seps``) dropped for one
    ``…``, keeping as much of its start and end as fits; cut inside a part only when no whole part
    fits beside the ``…``."""
    if len(name) <= room:
        return name
    parts, cuts = [], []
    start = 0
    for i, ch in enumerate(name):
        if ch in seps:
            parts.append(name[start:i])
            cuts.append(ch)
            start = i + 1
    parts.append(name[start:])
    # Keep a head of parts[:h] and a tail of parts[t:], as much of the name as fits (the tail on a tie).
    best, best_key = None, None
    for h in range(len(parts)):
        for t in range(h + 1, len(parts) + 1):
            if h == 0 and t == len(parts):
                continue
            head = "".join(p + c for p, c in zip(parts[:h], cuts[:h]))
            tail = "".join(c + p for c, p in zip(cuts[t - 1:], parts[t:]))
            text = head + ELLIPSIS + tail
            key = (len(text), len(tail))
            if len(text) <= room and (best_key is None or key > best_key):
                best, best_key = text, key
    if best is not None:
        return best
    if room < 2:
        return name[:room]
    keep = room - 1
    return name[: keep - keep * 2 // 3] + ELLIPSIS + name[len(name) - keep * 2 // 3:]


def fit_table(header: list[str], rows: list[list[str]], keys: int, columns: int, indent: str = "  ",
              glued: frozenset[int] = frozenset(), widths_from: list[list[str]] | None = None) -> list[list[str]]:
    """A text table in blocks no wider than ``columns``: the first ``keys`` columns (left-aligned)
    start every block, the others (right-aligned) follow in order, as many per block as fit. A
    column in ``glued`` stays in the block of the column before it. Columns are as wide as their
    widest entry in ``rows``, or in ``widths_from`` (every part of a table shown in parts, so the
    parts align and split alike). Returns each block's lines."""
    cells = [header, *rows]
    widths = [max(len(r[i]) for r in [header, *(widths_from or rows)]) for i in range(len(header))]

    def line(row: list[str], cols: list[int]) -> str:
        return (indent + "  ".join(row[i].ljust(widths[i]) if i < keys else row[i].rjust(widths[i])
                                   for i in cols)).rstrip()

    key_cols = list(range(keys))
    base = len(indent) + sum(widths[:keys]) + 2 * max(0, keys - 1)
    units: list[list[int]] = []
    for i in range(keys, len(header)):
        if i in glued and units:
            units[-1].append(i)
        else:
            units.append([i])
    blocks, current, used = [], [], base
    for unit in units:
        need = sum(widths[i] + 2 for i in unit)
        if current and used + need > columns:
            blocks.append(current)
            current, used = [], base
        current += unit
        used += need
    if current or not blocks:
        blocks.append(current)
    return [[line(row, key_cols + cols) for row in cells] for cols in blocks]


def shell(label: str, parts: list[str], columns: int) -> str:
    """A shell command after ``label``, on one line where it fits in ``columns``; else broken between
    ``parts`` with backslash continuations, so that pasted whole it still runs. A part is never cut."""
    lines, current = [], label + parts[0]
    for i, part in enumerate(parts[1:], 1):
        room = 0 if i == len(parts) - 1 else len(" \\")  # every line but the last ends in " \"
        if len(current) + 1 + len(part) + room > columns:
            lines.append(current + " \\")
            current = " " * (len(label) + 2) + part
        else:
            current += " " + part
    one = label + " ".join(parts)
    return one if len(one) <= columns else "\n".join([*lines, current])


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` naming the choice closest to a mistyped ``name`` (case aside), or ""
    when none is close: a message that lists every choice still points at the likely one."""
    by_lower = {c.lower(): c for c in choices}
    close = difflib.get_close_matches(name.lower(), list(by_lower), n=1, cutoff=0.6)
    return f" (did you mean {by_lower[close[0]]!r}?)" if close else ""
