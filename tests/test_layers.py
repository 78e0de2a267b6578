"""The layers stay layers: every import of every module (top level and inside functions) follows
an allowed arrow, and the light packages stay light to import."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "streamvol"

# package -> the streamvol packages it may import ("streamvol" is the root: __version__)
BASE = {"core", "errors"}
ALLOWED: dict[str, set[str]] = {
    "errors": set(),
    "core": {"errors"},
    "io": BASE,
    "synth": BASE | {"io"},
    "augment": BASE,
    "models": BASE,
    "metrics": BASE,
    "shard": BASE | {"io", "augment", "streamvol"},
    "stream": BASE | {"augment"},
    "predict": BASE | {"io", "metrics"},
    "train": BASE | {"io", "augment", "stream", "models", "metrics", "predict", "streamvol"},
    "bench": BASE | {"augment", "stream", "train", "models", "metrics"},
}
# the application: may import anything
TOP = {"cli", "_cli_options", "demo", "progress", "__main__", "__init__"}


def _package(path: Path) -> str:
    return path.relative_to(ROOT).with_suffix("").parts[0]


def _targets(path: Path) -> set[str]:
    """Every streamvol package a module imports, at any depth of its code (``streamvol`` for
    the root's ``__version__``)."""
    tree = ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "streamvol":  # from streamvol import models
                names = [f"streamvol.{a.name}" for a in node.names]
            else:
                names = [node.module]
        elif isinstance(node, ast.ImportFrom) and node.level:
            names = ["streamvol." + _package(path)]  # relative: the same package
        for name in names:
            parts = name.split(".")
            if parts[0] == "streamvol":
                target = parts[1] if len(parts) > 1 else "streamvol"
                found.add("streamvol" if target == "__version__" else target)
    return found


def _modules():
    return sorted(p for p in ROOT.rglob("*.py"))


def test_every_import_follows_an_allowed_arrow():
    wrong = []
    for path in _modules():
        package = _package(path)
        if package in TOP:
            continue
        assert package in ALLOWED, f"{path}: package {package!r} is missing from ALLOWED"
        for target in _targets(path) - {package}:
            if target == "streamvol" and "streamvol" in ALLOWED[package]:
                continue
            if target not in ALLOWED[package]:
                wrong.append(f"{path.relative_to(ROOT.parent)}: {package} -> {target}")
    assert not wrong, "imports against the layering:\n" + "\n".join(wrong)


def test_the_table_has_no_cycle():
    seen: dict[str, int] = {}

    def visit(package: str, stack: tuple[str, ...]) -> None:
        if package in stack:
            pytest.fail(f"cycle: {' -> '.join((*stack, package))}")
        if seen.get(package):
            return
        for target in ALLOWED.get(package, set()) - {"streamvol"}:
            visit(target, (*stack, package))
        seen[package] = 1

    for package in ALLOWED:
        visit(package, ())


def _module_imports(path: Path) -> set[str]:
    """The streamvol modules a module imports when it runs (at any depth of its code, but not
    under ``if TYPE_CHECKING:``), as dotted names: ``from a import b`` counts ``a`` and ``a.b``."""
    tree = ast.parse(path.read_text())
    typing_only = {
        id(inner)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING"
        for stmt in node.body
        for inner in ast.walk(stmt)
    }
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
    return {name for name in found if name.startswith("streamvol")}


def _module_name(path: Path) -> str:
    name = ".".join(path.relative_to(ROOT.parent).with_suffix("").parts)
    return name.removesuffix(".__init__")


def test_no_module_imports_itself_back():
    """No cycle of modules, inside a package or across packages: a cycle held together by an
    import inside a function still couples both ends."""
    modules = {_module_name(p): p for p in _modules()}
    edges = {
        name: {
            target
            for target in _module_imports(path) & modules.keys()
            if target != name and not name.startswith(target + ".")  # a package's own facade
        }
        for name, path in modules.items()
    }
    done: set[str] = set()

    def visit(name: str, stack: tuple[str, ...]) -> None:
        if name in stack:
            pytest.fail("import cycle: " + " -> ".join((*stack[stack.index(name) :], name)))
        if name in done:
            return
        for target in sorted(edges[name]):
            visit(target, (*stack, name))
        done.add(name)

    for name in sorted(modules):
        visit(name, ())


def test_the_finder_sees_every_kind_of_import(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text(
        "import streamvol.io\nfrom streamvol import models, __version__\n"
        "def f():\n    from streamvol.shard.plan import as_zyx\n"
    )
    assert _targets(probe) == {"io", "models", "streamvol", "shard"}


@pytest.mark.parametrize(
    ("package", "heavy"),
    [
        ("streamvol.augment", ("dask", "streamvol.shard", "streamvol.io", "streamvol.stream")),
        ("streamvol.core.rng", ("torch", "dask")),
        ("streamvol.errors", ("numpy",)),
        # predict scores with the picking metric only: scikit-learn and matplotlib load when a
        # report or a plot is asked for (1.2 s of each predict command's start)
        ("streamvol.predict", ("sklearn", "matplotlib")),
    ],
)
def test_light_packages_import_light(package, heavy):
    code = f"import sys, {package}; print([m for m in {heavy!r} if m in sys.modules])"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]", done.stdout


@pytest.mark.parametrize(
    "package", ["streamvol", "streamvol.augment", "streamvol.metrics", "streamvol.train"]
)
def test_every_public_name_resolves_and_no_other(package):
    """Names loaded on first use (``core.lazy``) are there when asked for; a wrong one is an
    AttributeError naming the package, as for any module."""
    module = importlib.import_module(package)
    for name in module.__all__:
        assert getattr(module, name) is not None, name
    with pytest.raises(AttributeError, match=f"module '{package}' has no attribute 'nope'"):
        module.nope  # noqa: B018
