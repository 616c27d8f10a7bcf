"""The package's shape: which stage may import which, no import cycle between modules (counting imports inside
functions too), and a top level a newcomer can read."""

import ast
from pathlib import Path

from .conftest import REPO

PACKAGE = REPO / "src" / "nlft"


def module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """The package modules ``path`` imports anywhere in it (top level, functions, TYPE_CHECKING blocks)."""
    me = module_name(path)
    package = me if path.name == "__init__.py" else me.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name in modules)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target in modules:
                found.add(target)
            for alias in node.names:  # from . import x, where x is a module
                if f"{target}.{alias.name}" in modules:
                    found.add(f"{target}.{alias.name}")
    found.discard(me)
    return found


def import_graph() -> dict[str, set[str]]:
    files = sorted(PACKAGE.rglob("*.py"))
    modules = {module_name(f) for f in files}
    return {module_name(f): imports_of(f, modules) for f in files}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


# What each part of the package may import (besides itself). A part is a sub-package (``nlft/train/``) or a
# top-level module (``nlft/records.py``); ``nlft`` is the package root (``resource_path``). The stages run
# data -> train -> evals/see, on the basics (files, jsonl, records, prompts, runs, options) and the tasks and
# models:
# the NLFT maths imports nothing else of nlft; training never imports evaluation or the saliency views;
# evaluation never imports training or the views (it may use data's arithmetic judge on the answers it scores).
# The entry points (cli, demo, experiment) may import anything.
BASICS = {"nlft", "files", "jsonl", "records", "prompts", "runs", "console", "options"}
ALLOWED: dict[str, set[str]] = {
    "method": set(),
    "files": set(),
    "jsonl": {"files"},
    "console": set(),
    "options": set(),
    "distributed": set(),
    "records": {"nlft", "options"},
    "runs": {"files"},
    "prompts": {"nlft", "files", "records"},
    "tasks": {"nlft", "records", "files", "options"},
    "models": BASICS,
    "data": BASICS | {"tasks", "models"},
    "train": BASICS | {"tasks", "models", "method", "distributed"},
    "evals": BASICS | {"tasks", "models", "data"},
    "see": BASICS | {"tasks", "models", "method", "train", "data", "evals"},
}
ENTRY_POINTS = {"__main__", "cli", "demo", "experiment"}


def part(module: str) -> str:
    pieces = module.split(".")
    return pieces[1] if len(pieces) > 1 else "nlft"


def forbidden_imports(graph: dict[str, set[str]]) -> list[str]:
    out = []
    for module, targets in sorted(graph.items()):
        mine = part(module)
        if mine in ENTRY_POINTS or mine == "nlft":
            continue
        for target in sorted(targets):
            theirs = part(target)
            if theirs != mine and theirs not in ALLOWED.get(mine, set()):
                out.append(f"{module} imports {target}")
    return out


def test_the_direction_check_names_a_forbidden_import():
    graph = {"nlft.train.run": {"nlft.evals.evaluation", "nlft.records"}, "nlft.method.loss": {"nlft.runs"}}
    assert forbidden_imports(graph) == [
        "nlft.method.loss imports nlft.runs",
        "nlft.train.run imports nlft.evals.evaluation",
    ]


def test_the_allowed_directions_have_no_cycle():
    assert find_cycle({k: set(v) - {k} for k, v in ALLOWED.items()}) is None


def test_every_part_of_the_package_imports_only_what_its_stage_may():
    graph = import_graph()
    assert {part(m) for m in graph} <= set(ALLOWED) | ENTRY_POINTS | {"nlft"}, (
        "a new part needs its row in ALLOWED"
    )
    assert forbidden_imports(graph) == []


def test_the_top_level_is_short():
    top = sorted(p.stem for p in PACKAGE.glob("*.py"))
    assert len(top) <= 16, top
    assert {"method", "tasks", "data", "train", "evals", "see", "models"} <= {
        p.name for p in PACKAGE.iterdir() if p.is_dir()
    }


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_the_graph_sees_lazy_and_relative_imports():
    graph = import_graph()
    assert "nlft.cli" in graph and len(graph) > 20
    assert "nlft.train.run" in graph["nlft.cli"]  # imported inside run_train only
    assert "nlft.method.weighting" in graph["nlft.method.loss"]


def test_no_import_cycle_between_package_modules():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)
