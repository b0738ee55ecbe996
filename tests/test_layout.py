"""The package's layout, measured on its source with the AST: tiers of imports,
no circle, short functions and modules, no reaching into other modules'
private names (docs/design.md)."""

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "xpnet"

TIERS = {
    1: ["dtypes", "io", "idx", "functions", "series", "pairs", "plan", "budget", "book"],
    2: ["backend", "checks", "device", "shm", "team", "procs", "timing", "datasets", "rundir",
        "plots", "progress"],
    3: ["heads", "model", "optimizers", "metrics", "netfile", "checkpoint", "history"],
    4: ["gradient", "work", "hidden", "block", "shared_block", "structured", "numerical",
        "cluster", "distributed", "gradcheck"],
    5: ["network", "two_layer"],
    6: ["config", "train", "sweep", "bench"],
    7: ["cli", "commands", "__init__"],
}  # fmt: skip
TIER = {module: tier for tier, modules in TIERS.items() for module in modules}
MODULES = {path.stem: path for path in PACKAGE.glob("*.py")}


def _tree(module):
    return ast.parse(MODULES[module].read_text(encoding="utf-8"))


def _imports(module) -> set:
    found = set()
    for node in ast.walk(_tree(module)):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                found.add(node.module.split(".")[0])
            else:
                found.update(alias.name for alias in node.names)
    return found & set(MODULES)


def test_every_module_has_a_tier():
    assert set(MODULES) == set(TIER)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_a_module_imports_only_from_its_tier_or_below(module):
    above = {m for m in _imports(module) if TIER[m] > TIER[module]}
    assert not above, f"{module} (tier {TIER[module]}) imports {above} from above"


def test_no_import_circle():
    graph = {module: _imports(module) - {"__init__"} for module in MODULES}
    done, stack = set(), []

    def visit(module):
        if module in stack:
            raise AssertionError(f"import circle: {' -> '.join([*stack, module])}")
        if module in done:
            return
        stack.append(module)
        for dep in graph[module]:
            visit(dep)
        stack.pop()
        done.add(module)

    for module in graph:
        visit(module)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_short_functions_and_modules(module):
    lines = MODULES[module].read_text(encoding="utf-8").count("\n")
    assert lines <= 450, f"{module}.py has {lines} lines"
    for node in ast.walk(_tree(module)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            length = node.end_lineno - node.lineno + 1
            assert length <= 60, f"{module}.{node.name} has {length} lines"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_private_names_of_other_objects(module):
    """``x._name`` only on ``self``/``cls``: another module's or object's
    internals are not an API."""
    for node in ast.walk(_tree(module)):
        if (
            isinstance(node, ast.Attribute)
            and node.attr.startswith("_")
            and not node.attr.startswith("__")
            and isinstance(node.value, ast.Name)
            and node.value.id not in ("self", "cls")
        ):
            raise AssertionError(f"{module}.py:{node.lineno}: {node.value.id}.{node.attr}")
