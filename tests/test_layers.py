"""The package's layers as README's layout draws them: the core (data, models, unlearn, metrics, ...)
imports nothing of the study layer; inside the study layer each room imports only rooms below it
(spec < record < tracking, record < cluster < search < the runner, report and progress); and no
module imports, directly or through others, itself. Read from the source with ast, every import
counted, those inside functions too."""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "falw_ray"

ROOMS_BELOW = {
    "spec": set(),
    "record": {"spec"},
    "tracking": {"spec", "record"},
    "cluster": {"spec", "record"},
    "search": {"spec", "record", "cluster"},
    "top": {"spec", "record", "tracking", "cluster", "search"},
}
"""Which rooms of falw_ray.study each room may import (besides itself and the core)."""


def modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        name = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        out[name.removesuffix(".__init__")] = path
    return out


def imports(mods: dict[str, Path]) -> dict[str, set[str]]:
    """module -> the falw_ray modules it imports (a package's ``from . import x`` counts as x)."""
    edges: dict[str, set[str]] = {}
    for name, path in mods.items():
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            targets = []
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                submodules = [f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in mods]
                targets = submodules or [target]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            found |= {t for t in targets if t in mods and t != name}
        edges[name] = found
    return edges


def room(module: str) -> str | None:
    """The study room a module lives in (None: not in the study layer)."""
    parts = module.split(".")
    if parts[:2] != ["falw_ray", "study"] or len(parts) == 2:
        return None
    if len(parts) > 3:
        return parts[2]
    return "spec" if parts[2] == "spec" else "top"


def test_the_import_reader_sees_what_it_should():
    edges = imports(modules())
    assert "falw_ray.study.record.journal" in edges["falw_ray.study.runner"]
    assert "falw_ray.study.cluster.slurm" in edges["falw_ray.cli"], "an import inside a function counts"
    assert "falw_ray.data.files" in edges["falw_ray.data.registry"]


def test_the_core_imports_nothing_of_the_study_layer_or_the_command_line():
    edges = imports(modules())
    upward = {(a, b) for a, bs in edges.items() for b in bs
              if room(a) is None and a not in ("falw_ray.cli", "falw_ray.study")
              and (room(b) is not None or b == "falw_ray.cli")}
    assert upward == set()


def test_each_study_room_imports_only_rooms_below_it():
    edges = imports(modules())
    wrong = {(a, b) for a, bs in edges.items() for b in bs
             if room(a) and room(b) and room(a) != room(b) and room(b) not in ROOMS_BELOW[room(a)]}
    assert wrong == set()
    assert {room(m) for m in modules()} - {None} == set(ROOMS_BELOW)


def test_no_import_cycle():
    edges = imports(modules())
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for n in sorted(edges[m]):
            if state.get(n) == 1:
                cycles.append(stack[stack.index(n):] + [n])
            elif n not in state:
                visit(n)
        stack.pop()
        state[m] = 2

    for m in sorted(edges):
        if m not in state:
            visit(m)
    assert cycles == []
