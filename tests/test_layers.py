"""The house: lab's modules import one way only (no circle), each from a lower layer, with imports at the top."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

LAB = Path(__file__).resolve().parent.parent / "lab"

# Bottom to top, as drawn in the README's Layout section; a module imports only from layers below its own.
LAYERS = [
    {"config", "presets", "runs", "stats", "models", "space", "data_files"},
    {"hub_data"},  # a hub dataset's files, through models' cache: read by data, so below it
    {"data", "generate", "toxicity", "diagnostics", "jobs", "memory"},
    {"rl", "votes", "reward_model", "augment", "trunk", "sampling", "relevance"},
    {"rollout", "sources", "policies"},
    # a stage's parts, below the stage that runs them: evaluation and metrics during PPO (called by the PPO loop),
    # the reward model's pairs and its scoring
    {"evaluate", "ppo_metrics", "reward_data", "reward_eval"},
    # PPO-ptx's demonstrations (a reward run's proxy pairs for the PPO loop) and Compare's familiarity (its requests)
    {"imitation", "familiarity"},
    {"reward", "ppo", "compare", "feedback"},
    {"ui"},  # the tabs, plots and app: imports among lab.ui's own modules are allowed (they are checked for circles)
    {"server"},
    {"cli"},
    {"__main__"},
]
LAYER = {name: i for i, layer in enumerate(LAYERS) for name in layer}


def module_name(path: Path) -> str:
    parts = path.relative_to(LAB.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def lab_imports(path: Path) -> list[tuple[str, int, bool]]:
    """(imported lab module, line, at module level) for every import of a lab module in the file."""
    tree = ast.parse(path.read_text())
    top = {id(node) for node in tree.body}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "lab":
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            found += [(n, node.lineno, id(node) in top) for n in names]
        elif isinstance(node, ast.Import):
            found += [(a.name, node.lineno, id(node) in top) for a in node.names if a.name.split(".")[0] == "lab"]
    return found


def graph() -> dict[str, set[str]]:
    """lab module -> the lab modules it imports (anywhere in the file), packages resolved to their modules."""
    files = {module_name(p): p for p in LAB.rglob("*.py")}
    edges = {}
    for name, path in files.items():
        targets = {t for t, _, _ in lab_imports(path) if t in files and t != name}
        edges[name] = targets - {"lab"}
    return edges


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One import circle as a list of modules (first = last), or None."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = 2
        path.pop()
        return None

    for node in sorted(edges):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_import_circle_in_lab():
    assert find_cycle(graph()) is None, " -> ".join(find_cycle(graph()) or [])


def test_the_cycle_finder_finds_a_circle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def _layer(module: str) -> int:
    parts = module.split(".")
    key = "ui" if parts[1:2] == ["ui"] else (parts[1] if len(parts) > 1 else "lab")
    assert key in LAYER, f"{module} is in no layer of LAYERS: add it where it belongs (and to the README)"
    return LAYER[key]


@pytest.mark.parametrize("module", sorted(m for m in graph() if m != "lab"))
def test_each_module_imports_only_from_lower_layers(module):
    mine = _layer(module)
    for target in graph()[module]:
        same_ui = module.startswith("lab.ui") and target.startswith("lab.ui")
        assert same_ui or _layer(target) < mine, f"{module} (layer {mine}) imports {target} (layer {_layer(target)})"


def test_lab_imports_sit_at_the_top_of_files():
    """An import of a lab module inside a function hides a dependency; the one exception is the CLI starting the
    web app (gradio loads slowly), which says so in a comment."""
    late = []
    for path in sorted(LAB.rglob("*.py")):
        lines = path.read_text().splitlines()
        for target, line, at_top in lab_imports(path):
            if not at_top and "#" not in lines[line - 1]:
                late.append(f"{path.relative_to(LAB.parent)}:{line} imports {target}")
    assert not late, "\n".join(late)
