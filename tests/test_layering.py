"""The package layering: every import inside ``src/evorec`` (function-level ones included,
``if TYPE_CHECKING:`` blocks excluded) points to the same layer or one below, and no
modules import each other in a loop."""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

SOURCE = Path(__file__).resolve().parents[1] / "src" / "evorec"

# top first; packages of one layer may import each other
LAYERS: list[set[str]] = [
    {"evorec"},  # the public API of evorec/__init__.py
    {"cli", "demo", "__main__"},  # __main__: python -m evorec (torchrun -m evorec)
    {"serving", "benchmarking"},
    {"training"},
    {"evaluation", "analytics"},  # analytics reads models and datasets as evaluation does
    {"models"},
    {"features", "store", "retrieval"},
    # config.py is the run configuration: it holds the data stage's settings (reading,
    # encoding check, preprocessing, split) beside the model and evaluation sections, so it
    # sits with data, below every stage that reads a run config
    {"data", "config"},
    {"errors", "io", "modeldir", "version"},
]


@dataclass(frozen=True)
class Import:
    source: str  # importing module, dotted
    target: str  # imported module, dotted
    file: Path
    line: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.source} imports {self.target}"


def module_names(root: Path) -> dict[str, Path]:
    """Dotted module name -> file, for the package at ``root`` (its name is the folder's)."""
    names = {}
    for file in sorted(root.rglob("*.py")):
        parts = [root.name, *file.relative_to(root).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = file
    return names


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _import_nodes(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    """Every import statement in ``tree`` outside ``if TYPE_CHECKING:`` bodies."""
    found: list[ast.Import | ast.ImportFrom] = []
    pending: list[ast.AST] = [tree]
    while pending:
        node = pending.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
        elif isinstance(node, ast.If) and _is_type_checking(node.test):
            pending.extend(node.orelse)
            continue
        pending.extend(ast.iter_child_nodes(node))
    return found


def import_graph(root: Path) -> list[Import]:
    """The imports between modules of the package at ``root``: ``from a import b`` points
    to module ``a.b`` when there is one, else to ``a``; relative imports are resolved."""
    names = module_names(root)
    imports: dict[tuple[str, str, int], Import] = {}
    for source, file in names.items():
        package = source if file.name == "__init__.py" else source.rpartition(".")[0]
        for node in _import_nodes(ast.parse(file.read_text(), str(file))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*anchor, base] if base else anchor)
                targets = [
                    f"{base}.{alias.name}" if f"{base}.{alias.name}" in names else base
                    for alias in node.names
                ]
            for target in targets:
                if target in names and target != source:
                    imports[source, target, node.lineno] = Import(source, target, file, node.lineno)
    return list(imports.values())


def unit(module: str) -> str:
    """The layering unit of a module: its subpackage, or a top-level module's own name."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def upward_imports(imports: list[Import], layers: list[set[str]]) -> list[Import]:
    """Imports that point to a layer above the importing module's."""
    level = {name: depth for depth, units in enumerate(layers) for name in units}
    unplaced = {unit(m) for i in imports for m in (i.source, i.target)} - level.keys()
    assert not unplaced, f"modules in no layer: {sorted(unplaced)}"
    return [i for i in imports if level[unit(i.target)] < level[unit(i.source)]]


def import_cycles(imports: list[Import]) -> list[list[Import]]:
    """One loop of imports for each group of modules that import each other (Tarjan)."""
    edges: dict[str, list[Import]] = {}
    for i in imports:
        edges.setdefault(i.source, []).append(i)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for edge in edges.get(node, []):
            if edge.target not in index:
                visit(edge.target)
                low[node] = min(low[node], low[edge.target])
            elif edge.target in stack:
                low[node] = min(low[node], index[edge.target])
        if low[node] == index[node]:
            group = set()
            while True:
                member = stack.pop()
                group.add(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(group)

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return [_loop(group, edges) for group in groups]


def _loop(group: set[str], edges: dict[str, list[Import]]) -> list[Import]:
    """A path of imports inside ``group`` from its first module back to itself."""
    start = min(group)
    paths: dict[str, list[Import]] = {start: []}
    queue = [start]
    while queue:
        node = queue.pop(0)
        for edge in edges.get(node, []):
            if edge.target == start:
                return [*paths[node], edge]
            if edge.target in group and edge.target not in paths:
                paths[edge.target] = [*paths[node], edge]
                queue.append(edge.target)
    raise AssertionError(f"no loop through {start}")


def _report(title: str, lines: list[str]) -> str:
    text = "\n".join([title, *(f"  {line}" for line in lines)])
    print(text)
    return text


def test_no_package_imports_a_layer_above_it() -> None:
    wrong = upward_imports(import_graph(SOURCE), LAYERS)
    assert not wrong, _report(f"{len(wrong)} imports point up the layers:", [str(i) for i in wrong])


def test_no_import_loops() -> None:
    loops = import_cycles(import_graph(SOURCE))
    lines = [line for loop in loops for line in ("loop:", *(str(i) for i in loop))]
    assert not loops, _report(f"{len(loops)} import loops:", lines)


def _fake_tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        file = root / "pkg" / name
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_text(text)
    return root / "pkg"


def test_checker_finds_upward_imports_and_loops(tmp_path: Path) -> None:
    tree = _fake_tree(
        tmp_path,
        {
            "__init__.py": "",
            "errors.py": "",
            "models/__init__.py": "",
            "models/base.py": "from pkg.errors import X\n"
            "def fit():\n    from pkg.training import loop\n",
            "models/typed.py": "from typing import TYPE_CHECKING\n"
            "if TYPE_CHECKING:\n    from pkg.training.loop import run\n",
            "training/__init__.py": "",
            "training/loop.py": "from ..models import base\n",
        },
    )
    imports = import_graph(tree)
    layers = [{"training"}, {"models"}, {"errors"}]
    assert {(i.source, i.target) for i in imports} == {
        ("pkg.models.base", "pkg.errors"),
        ("pkg.models.base", "pkg.training.loop"),
        ("pkg.training.loop", "pkg.models.base"),
    }
    (wrong,) = upward_imports(imports, layers)
    assert (wrong.source, wrong.target, wrong.line) == ("pkg.models.base", "pkg.training.loop", 3)
    (loop,) = import_cycles(imports)
    assert [(i.source, i.target) for i in loop] == [
        ("pkg.models.base", "pkg.training.loop"),
        ("pkg.training.loop", "pkg.models.base"),
    ]


def test_checker_accepts_a_clean_tree(tmp_path: Path) -> None:
    tree = _fake_tree(
        tmp_path,
        {
            "__init__.py": "from pkg.training import loop\n",
            "errors.py": "",
            "models/__init__.py": "from pkg.models.base import fit\n",
            "models/base.py": "import pkg.errors\n",
            "training/__init__.py": "",
            "training/loop.py": "from pkg.models import fit\nfrom pkg import errors\n",
        },
    )
    imports = import_graph(tree)
    assert not upward_imports(imports, [{"pkg"}, {"training"}, {"models"}, {"errors"}])
    assert not import_cycles(imports)


def test_test_folders_mirror_the_packages() -> None:
    tests = Path(__file__).resolve().parent
    packages = {path.name for path in SOURCE.iterdir() if (path / "__init__.py").exists()}
    folders = {
        path.name
        for path in tests.iterdir()
        if path.is_dir() and path.name not in {"fixtures", "__pycache__"}
    }
    assert folders <= packages, f"test folders without a package: {sorted(folders - packages)}"
    assert not list(tests.glob("*/*/test_*.py")), "tests nest one folder deep, as the packages do"
