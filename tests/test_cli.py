"""The command line: version, help for every command, one-line answers for what is not built."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from streamvol import __version__
from streamvol.cli import app

runner = CliRunner()
COMMANDS = [
    "synth", "shard", "inspect", "train", "evaluate", "predict", "score", "cv", "bench", "demo"
]  # fmt: skip


def test_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.stdout.strip() == f"streamvol {__version__}"


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_real_help(command):
    result = runner.invoke(app, [command, "--help"])
    assert result.exit_code == 0
    assert "Usage" in result.stdout
    assert len(result.stdout.splitlines()) > 4


def test_top_level_cli_py_runs_the_same_app():
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run(
        [sys.executable, str(root / "cli.py"), "--help"], capture_output=True, text=True, cwd=root
    )
    assert done.returncode == 0
    for command in COMMANDS:
        assert command in done.stdout


def test_synth_unknown_kind_is_one_line(tmp_path):
    result = runner.invoke(app, ["synth", "galaxies", str(tmp_path / "x")])
    assert result.exit_code == 1
    assert "galaxies" in result.output and "tomograms" in result.output
    assert "Traceback" not in result.output
