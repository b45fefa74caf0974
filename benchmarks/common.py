"""Shared helpers for the benchmarks: machine facts, paired timing, medians, ratios, tables.

Every benchmark compares two (or more) ways side by side in one run. The machines are shared and
noisy, so each comparison is repeated in pairs (A then B, then B then A, ...), and we report the
median of each side, the ratio of the medians, and the per-pair ratios.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def machine() -> dict:
    """What the figures were measured on: cores, CPU model, memory, versions, load at the start."""
    info = {"nproc": os.cpu_count(), "python": platform.python_version()}
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        with open("/proc/meminfo") as f:
            kb = int(next(line for line in f if line.startswith("MemTotal")).split()[1])
        info["mem_gib"] = round(kb / 2**20, 1)
    except (OSError, StopIteration):
        pass
    info["loadavg_at_start"] = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    for mod in ("torch", "ray", "sklearn", "numpy", "optuna", "mlflow"):
        try:
            info[mod] = __import__(mod).__version__
        except ImportError:
            pass
    try:
        import torch

        info["cuda"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    except Exception:  # noqa: BLE001 - informational only
        info["cuda"] = "unknown"
    return info


def print_machine(info: dict) -> None:
    keys = ("nproc", "cpu", "mem_gib", "cuda", "torch", "ray", "sklearn", "numpy", "python", "loadavg_at_start")
    print("machine: " + ", ".join(f"{k}={info[k]}" for k in keys if k in info), flush=True)
    print("note: a shared machine (other jobs may run at the same time): figures are medians of paired runs", flush=True)


def median(xs: Sequence[float]) -> float:
    return float(statistics.median(xs)) if len(xs) else float("nan")


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def paired(sides: dict[str, Callable[[int], object]], repeats: int, log=print) -> dict[str, list]:
    """Run every side once per repeat, rotating the order each repeat (A B, B A, ...).

    Each side is called with the repeat index and returns either seconds (a float) or a dict with
    at least "seconds". Returns side -> list of results, index-aligned (pair i = repeat i).
    """
    names = list(sides)
    out: dict[str, list] = {n: [None] * repeats for n in names}
    for i in range(repeats):
        order = names[i % len(names):] + names[: i % len(names)]
        for name in order:
            res = sides[name](i)
            out[name][i] = res
            secs = res["seconds"] if isinstance(res, dict) else res
            log(f"  pair {i + 1}/{repeats}: {name}: {secs:.3f}s")
    return out


def seconds_of(results: list) -> list[float]:
    return [r["seconds"] if isinstance(r, dict) else float(r) for r in results]


def ratio_summary(slow: list[float], fast: list[float]) -> dict:
    """Ratio of medians (slow / fast) and the per-pair ratios."""
    pairs = [s / f for s, f in zip(slow, fast) if f > 0]
    return {
        "median_slow": median(slow), "median_fast": median(fast),
        "ratio_of_medians": median(slow) / median(fast) if median(fast) > 0 else float("nan"),
        "pair_ratios": pairs, "median_pair_ratio": median(pairs),
        "min_pair_ratio": min(pairs) if pairs else float("nan"), "max_pair_ratio": max(pairs) if pairs else float("nan"),
    }


def fmt_pairs(pairs: Sequence[float]) -> str:
    return "[" + ", ".join(f"{p:.2f}" for p in pairs) + "]"


def table(rows: list[dict], columns: list[str] | None = None, floatfmt: str = "{:.3f}") -> str:
    """A Markdown table of ``rows`` (dicts): what each benchmark prints at the end."""
    if not rows:
        return "(no rows)"
    columns = columns or list(rows[0])

    def cell(v) -> str:
        if isinstance(v, float):
            return floatfmt.format(v)
        if isinstance(v, (list, tuple)):
            return fmt_pairs(v) if all(isinstance(x, float) for x in v) else str(v)
        return str(v)

    body = [[cell(r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(c), *(len(b[i]) for b in body)) for i, c in enumerate(columns)]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(columns, widths)) + " |",
             "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    lines += ["| " + " | ".join(v.ljust(w) for v, w in zip(b, widths)) + " |" for b in body]
    return "\n".join(lines)


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far (MiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rss_mib(pid: int | None = None) -> float:
    """Current resident set size (MiB) of ``pid`` (default: this process), from /proc."""
    path = f"/proc/{pid or 'self'}/status"
    with open(path) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--json", type=Path, default=None, help="also write the figures to this JSON file")
    return p


def save_json(path: Path | None, payload: dict) -> None:
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=1, default=_jsonable))
    print(f"figures written to {path}", flush=True)


def _jsonable(o):
    try:
        import numpy as np

        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
    except ImportError:
        pass
    if isinstance(o, Path):
        return str(o)
    return repr(o)


def header(title: str) -> dict:
    print(f"== {title} ==", flush=True)
    info = machine()
    print_machine(info)
    print("command: " + " ".join([Path(sys.executable).name, *sys.argv]), flush=True)
    return info
