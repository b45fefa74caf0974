"""How long the light `falw-ray` commands take to answer, old code against this checkout's.

    python benchmarks/cli_startup.py --base dcb898f            # 7 rotating pairs per command
    python benchmarks/cli_startup.py --base main --repeats 11 --json /tmp/cli.json

The claim (README "Other commands", issue 22): ``--help``, ``--version``, ``validate``, ``methods`` and
``baselines list`` answer without importing torch, Ray or MLflow, so in well under a second. Which
modules they import is tested (tests/test_cli_startup.py); the time is measured here.

The old side is ``--base``, checked out by ``git worktree add`` into a temporary folder (removed at
the end); each side runs as a user runs it, ``python -m falw_ray.cli ...`` in a fresh interpreter,
with ``PYTHONPATH`` naming its tree, so the first import of everything is counted. Each command runs
in pairs, old and new, the order rotated every pair; a command the old code lacks (``--version``) runs
on the new side only. Every run must exit 0. ``validate`` checks each side's own
studies/quickstart.yaml; ``baselines list`` lists an empty store. A last row times the floor under
every command: the interpreter's start and ``import falw_ray``.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

COMMANDS = {
    "--help": ["--help"],
    "--version": ["--version"],
    "validate": ["validate", "{tree}/studies/quickstart.yaml"],
    "methods": ["methods"],
    "baselines list": ["baselines", "list", "--store", "{store}"],
}


FLOOR = ["-c", "import falw_ray"]
"""The floor no command can go under: the interpreter's start and ``import falw_ray`` (timed on the new side)."""


def run_cli(tree: Path, args: list[str], store: Path) -> float:
    """Seconds from starting the interpreter to its exit, for ``python -m falw_ray.cli ARGS`` from ``tree``."""
    argv = [a.format(tree=tree, store=store) for a in args]
    env = {**os.environ, "PYTHONPATH": str(tree)}
    command = [sys.executable, *argv] if args is FLOOR else [sys.executable, "-m", "falw_ray.cli", *argv]
    start = time.perf_counter()
    proc = subprocess.run(command, capture_output=True, text=True, env=env, cwd=store.parent, timeout=300)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{tree}: falw-ray {' '.join(argv)} exited {proc.returncode}: {proc.stderr.strip()[-500:]}")
    return seconds


def old_has(tree: Path, args: list[str], store: Path) -> bool:
    try:
        run_cli(tree, args, store)
        return True
    except SystemExit:
        return False


def main() -> None:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--base", required=True, help="the old code's commit (e.g. the commit before this change)")
    p.add_argument("--repeats", type=int, default=7, help="pairs per command (default 7)")
    args = p.parse_args()
    info = common.header("falw-ray startup: old (--base) vs new (this checkout)")
    base = subprocess.run(["git", "rev-parse", "--short", args.base], capture_output=True, text=True, cwd=common.ROOT,
                          check=True).stdout.strip()
    new = common.ROOT
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=new).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True,
                           cwd=new).stdout.strip()
    print(f"old: {base}; new: {new} at {head}{' (with uncommitted changes)' if dirty else ''}", flush=True)
    work = Path(tempfile.mkdtemp(prefix="cli_startup_"))
    old = work / "old"
    store = work / "store"
    store.mkdir()
    subprocess.run(["git", "worktree", "add", "--detach", "--quiet", str(old), base], cwd=common.ROOT, check=True)
    rows, figures = [], {"machine": info, "base": base, "head": head, "dirty": bool(dirty), "commands": {}}
    try:
        for name, cli_args in {**COMMANDS, "(floor: python -c 'import falw_ray')": FLOOR}.items():
            print(f"{name}:", flush=True)
            sides = {"new": lambda i, a=cli_args: run_cli(new, a, store)}
            if cli_args is not FLOOR and old_has(old, cli_args, store):
                sides = {"old": lambda i, a=cli_args: run_cli(old, a, store), **sides}
            results = common.paired(sides, args.repeats)
            new_s = common.seconds_of(results["new"])
            row = {"command": name if cli_args is FLOOR else f"falw-ray {name}", "new median s": common.median(new_s), "new min s": min(new_s)}
            if "old" in results:
                old_s = common.seconds_of(results["old"])
                summary = common.ratio_summary(old_s, new_s)
                row |= {"old median s": common.median(old_s), "old min s": min(old_s),
                        "old/new": summary["ratio_of_medians"], "pair ratios": summary["pair_ratios"]}
                figures["commands"][name] = {"old": old_s, "new": new_s, **summary}
            else:
                row |= {"old median s": "(none)", "old min s": "", "old/new": "", "pair ratios": ""}
                figures["commands"][name] = {"new": new_s}
            rows.append(row)
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(old)], cwd=common.ROOT, check=False)
        shutil.rmtree(work, ignore_errors=True)
    print(common.table(rows, ["command", "old median s", "new median s", "old/new", "old min s", "new min s",
                              "pair ratios"]))
    common.save_json(args.json, figures)


if __name__ == "__main__":
    main()
