"""The layers: ``cli -> flows -> tasks -> andon``, every arrow down, and no import cycle among the
modules of the repository. Imports inside functions count (they are how heavy libraries stay
lazy, and an upward arrow is no better for being late).

The folders ``cli/``, ``flows/`` and ``tasks/`` are installed as ``andon.cli``, ``andon.flows`` and
``andon.tasks`` (pyproject.toml's package-dir); the rest of ``andon.*`` is the domain (``andon/``)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
LAYERS = ("cli", "flows", "tasks", "andon")  # top to bottom: folders of the repository


def _module(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[0] != "andon":
        parts = ["andon", *parts]  # cli/main.py is andon.cli.main
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _layer(module: str) -> str:
    """``andon.cli.x`` -> cli, ``andon.flows.x`` -> flows, ``andon.tasks.x`` -> tasks, other ``andon.*`` -> andon."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in LAYERS[:-1] else "andon"


def _files() -> list[Path]:
    return [p for layer in LAYERS for p in (REPO / layer).rglob("*.py")]


def _runtime_nodes(tree: ast.AST) -> list[ast.AST]:
    """Every node but those under ``if TYPE_CHECKING:`` (a type-only import is no arrow at run time)."""
    out: list[ast.AST] = []
    todo = [tree]
    while todo:
        node = todo.pop()
        out.append(node)
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            todo.extend(node.orelse)
            continue
        todo.extend(ast.iter_child_nodes(node))
    return out


def _imports(path: Path) -> set[str]:
    """Every module a file imports at run time, absolute and resolved relative."""
    tree = ast.parse(path.read_text(), filename=str(path))
    here = _module(path).split(".")
    package = here if path.name == "__init__.py" else here[:-1]
    out: set[str] = set()
    for node in _runtime_nodes(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            mod = ".".join([*base, node.module] if node.module else base)
            out.add(mod)
            out |= {f"{mod}.{a.name}" for a in node.names}  # `from pkg import module`
    return out


def _graph() -> dict[str, set[str]]:
    modules = {_module(p): p for p in _files()}
    return {name: {m for m in _imports(path) if m in modules} for name, path in modules.items()}


def test_every_arrow_points_down() -> None:
    rank = {layer: i for i, layer in enumerate(LAYERS)}
    up = [f"{mod} -> {dep}" for mod, deps in _graph().items() for dep in deps if rank[_layer(dep)] < rank[_layer(mod)]]
    assert not up, up


@pytest.mark.parametrize("lib", ["prefect"])
def test_the_domain_never_imports_prefect(lib: str) -> None:
    offenders = [
        str(p.relative_to(REPO))
        for p in (REPO / "andon").rglob("*.py")
        if any(m == lib or m.startswith(f"{lib}.") for m in _imports(p))
    ]
    assert not offenders, offenders


def test_no_import_cycle() -> None:
    graph = _graph()
    # a package imports its own submodules by design (cli.main assembles cli.*): only module cycles count
    graph = {
        m: {d for d in deps if not m.startswith(f"{d}.") and not d.startswith(f"{m}.")} for m, deps in graph.items()
    }
    seen: dict[str, int] = {}  # 1 on the stack, 2 done
    cycles: list[list[str]] = []

    def visit(node: str, stack: list[str]) -> None:
        seen[node] = 1
        for dep in sorted(graph[node]):
            if seen.get(dep) == 1:
                cycles.append([*stack[stack.index(dep) :], dep])
            elif dep not in seen:
                visit(dep, [*stack, dep])
        seen[node] = 2

    for node in sorted(graph):
        if node not in seen:
            visit(node, [node])
    assert not cycles, cycles


def _top_level_names(path: Path) -> set[str]:
    """The names a module defines at its top level (functions, classes, assignments, imports)."""
    names: set[str] = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign):  # `A = ...` and `A, B = ...`
            targets = [e for t in node.targets for e in (t.elts if isinstance(t, ast.Tuple) else [t])]
            names |= {t.id for t in targets if isinstance(t, ast.Name)}
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
        elif isinstance(node, ast.Import | ast.ImportFrom):
            names |= {(a.asname or a.name).split(".")[0] for a in node.names}
        elif isinstance(node, ast.If):  # TYPE_CHECKING blocks, guarded definitions
            for sub in ast.walk(node):
                if isinstance(sub, ast.FunctionDef | ast.ClassDef):
                    names.add(sub.name)
                elif isinstance(sub, ast.Import | ast.ImportFrom):
                    names |= {(a.asname or a.name).split(".")[0] for a in sub.names}
    return names


def test_every_import_of_the_repository_resolves() -> None:
    """Lazy imports inside commands and tasks run only when they run: a moved module or a renamed
    function must fail here, not in front of a user (`andon demo` once imported a module that had
    moved)."""
    files = {_module(p): p for p in _files()}
    defined = {name: _top_level_names(path) for name, path in files.items()}
    broken = []
    for name, path in files.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and not node.level:
                if node.module.split(".")[0] != "andon":
                    continue
                if node.module not in files:
                    broken.append(f"{name}: no module {node.module}")
                    continue
                for alias in node.names:
                    if alias.name not in defined[node.module] and f"{node.module}.{alias.name}" not in files:
                        broken.append(f"{name}: {node.module} has no {alias.name}")
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.split(".")[0] == "andon" and alias.name not in files and alias.name != "andon":
                        broken.append(f"{name}: no module {alias.name}")
    assert not broken, broken


def test_no_module_imports_another_modules_private_names() -> None:
    """A name with a leading underscore is its module's business; what another module needs is public."""
    offenders = []
    for path in _files():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "andon":
                private = [a.name for a in node.names if a.name.startswith("_") and not a.name.startswith("__")]
                if private:
                    offenders.append(f"{path.relative_to(REPO)}: {node.module} {private}")
    assert not offenders, offenders
