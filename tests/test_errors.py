"""One error style: every error streamvol raises on bad input is typed (``streamvol.errors``),
the library raises no plain ``ValueError`` but at a few internal-bug checks, and the command line
reports a typed error in one red line (exit code 1) while a bug keeps its traceback."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest
from typer.testing import CliRunner

from streamvol import errors
from streamvol.cli import app
from streamvol.errors import BadInput, BadOption, StreamvolError

ROOT = Path(__file__).resolve().parents[1] / "streamvol"
runner = CliRunner()

# (module, function): checks of streamvol's own consistency, which only a bug can fail; they
# stay plain ValueErrors (a user could not have caused them, so the CLI shows their traceback).
PLAIN_VALUE_ERRORS = {
    ("models/_registry.py", "deco"),  # a model class registered twice under one name
    ("augment/_kernels/_cache.py", "update_records"),  # kernel modules that inline in a cycle
    ("synth/_spots.py", "_draw"),  # a candidate kind the module itself did not define
    ("_cli_options.py", "training_options"),  # the decorator given an unknown command
}


def _value_errors(path: Path) -> list[tuple[str, int]]:
    """(enclosing function, line) of every ``ValueError`` raised or built in ``path``."""
    tree = ast.parse(path.read_text())
    found = []

    def is_value_error(node: ast.AST | None) -> bool:
        return isinstance(node, ast.Name) and node.id == "ValueError"

    def visit(node: ast.AST, function: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                visit(child, child.name)
                continue
            built = isinstance(child, ast.Call) and is_value_error(child.func)
            if built or (isinstance(child, ast.Raise) and is_value_error(child.exc)):
                found.append((function, child.lineno))
            visit(child, function)

    visit(tree, "<module>")
    return found


def test_no_plain_value_error_outside_the_allow_list():
    found = {
        (str(path.relative_to(ROOT)), function, line)
        for path in sorted(ROOT.rglob("*.py"))
        for function, line in _value_errors(path)
    }
    stray = sorted(f"{p}:{n} in {f}()" for p, f, n in found if (p, f) not in PLAIN_VALUE_ERRORS)
    assert not stray, f"raise a type of streamvol.errors (BadInput, BadOption, ...): {stray}"
    stale = PLAIN_VALUE_ERRORS - {(p, f) for p, f, _ in found}
    assert not stale, f"allow-listed sites that raise no ValueError any more: {sorted(stale)}"


def test_the_ast_check_sees_raised_and_built_value_errors(tmp_path):
    path = tmp_path / "m.py"
    path.write_text(
        "def f(x):\n    raise ValueError(x)\n\n"
        "def g():\n    return ValueError('built, raised elsewhere')\n\n"
        "def h():\n    raise ValueError\n\n"
        "def ok():\n    try:\n        pass\n    except ValueError:\n        raise\n"
    )
    assert _value_errors(path) == [("f", 2), ("g", 5), ("h", 8)]


def test_every_error_is_a_streamvol_error_and_a_builtin():
    kinds = [
        cls
        for _, cls in inspect.getmembers(errors, inspect.isclass)
        if issubclass(cls, Exception) and not issubclass(cls, Warning) and cls is not StreamvolError
    ]
    assert BadInput in kinds and BadOption in kinds
    for cls in kinds:
        assert issubclass(cls, StreamvolError), cls
        builtins = [b for b in cls.__mro__ if b.__module__ == "builtins"]
        assert builtins[0] not in (Exception, BaseException, object), (cls, builtins)


# --- the command line's one handler ------------------------------------------------------------


def _score_raising(monkeypatch, exc: BaseException) -> None:
    """``streamvol score`` calls ``streamvol.predict.score_picks``; make it raise ``exc``."""

    def fail(*args, **kwargs):
        raise exc

    monkeypatch.setattr("streamvol.predict.score_picks", fail)


def _score(tmp_path, *extra: str):
    return runner.invoke(
        app, ["score", str(tmp_path / "a.csv"), str(tmp_path / "b.csv"), *extra], color=False
    )


@pytest.mark.parametrize(
    "bug", [RuntimeError("boom"), KeyError("boom"), ValueError("boom"), TypeError("boom")]
)
def test_a_bug_keeps_its_traceback(monkeypatch, tmp_path, bug):
    """Anything but a user error leaves the command as it was raised: CliRunner hands it back
    in ``result.exception`` (python would print its traceback), not as one ``error:`` line."""
    _score_raising(monkeypatch, bug)
    result = _score(tmp_path)
    assert result.exception is bug
    assert "error:" not in result.output
    with pytest.raises(type(bug), match="boom"):
        runner.invoke(app, ["score", "a", "b"], catch_exceptions=False)


@pytest.mark.parametrize(
    "exc",
    [
        BadInput("a.csv: expected a picks CSV"),
        FileNotFoundError(2, "No such file or directory", "a.csv"),
        FileExistsError("a.csv: exists"),
        PermissionError(13, "Permission denied", "a.csv"),
    ],
)
def test_a_user_error_is_one_line_and_exit_code_1(monkeypatch, tmp_path, exc):
    _score_raising(monkeypatch, exc)
    result = _score(tmp_path)
    assert result.exit_code == 1
    assert isinstance(result.exception, SystemExit)
    assert result.output == f"error: {exc}\n"


def test_a_bad_option_is_named_by_the_running_commands_flag(monkeypatch, tmp_path):
    _score_raising(monkeypatch, BadOption("beta", -1.0, "expected a positive beta"))
    assert _score(tmp_path).output == "error: --beta -1.0: expected a positive beta\n"
    _score_raising(monkeypatch, BadOption("pred", "x.csv", "expected picks"))  # an argument
    assert _score(tmp_path).output == "error: PRED x.csv: expected picks\n"
    _score_raising(monkeypatch, BadOption("lr", 0.0, "expected a positive learning rate"))
    text = _score(tmp_path).output  # score has no --lr: the library's name stays
    assert text == "error: lr=0.0: expected a positive learning rate\n"


def test_other_ranks_prefix_their_error(monkeypatch, tmp_path):
    _score_raising(monkeypatch, BadInput("no picks"))
    monkeypatch.setenv("RANK", "3")
    assert _score(tmp_path).output == "error: rank 3: no picks\n"


def test_library_errors_reach_the_command_line_as_flags(tmp_path):
    result = runner.invoke(app, ["synth", "galaxies", str(tmp_path / "x")])
    assert result.exit_code == 1
    assert result.output == "error: KIND galaxies: expected one of tomograms, nuclei, spots\n"
    result = runner.invoke(app, ["synth", "spots", str(tmp_path / "x"), "--size", "8,8"])
    assert "error: --size 8,8: expected a size as an int, 3 ints" in " ".join(result.output.split())
    result = runner.invoke(app, ["models", "resnet50"])
    assert result.exit_code == 1 and result.output.startswith("error: NAME resnet50: expected")
