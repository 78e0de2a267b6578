"""``benchmarks/loaders.py --quick``: every loader of the comparison runs end to end on a tiny
set, and the script writes figures only (tables, JSON, chart), the prose being RESULTS.md's."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_quick_run_writes_tables_json_and_chart(tmp_path):
    for name in ("monai", "torchio", "SimpleITK", "tifffile", "matplotlib"):
        pytest.importorskip(name)
    out, data, chart = tmp_path / "R.md", tmp_path / "l.json", tmp_path / "l.png"
    out.write_text("# earlier runs\n")
    script = str(ROOT / "benchmarks" / "loaders.py")
    outputs = ["--out", str(out), "--json", str(data), "--plot", str(chart)]
    done = subprocess.run(
        [sys.executable, script, "--quick", *outputs],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(data.read_text())
    cases = {(c["group"], c["name"], c["workers"]) for c in report["cases"]}
    for loader in ("streamvol", "seed-style", "MONAI", "TorchIO"):
        assert {("augment", loader, 0), ("augment", loader, 2)} <= cases
    assert ("kernel", "kernel, 2 processes x 1 thread", 2) in cases
    for case in report["cases"]:
        assert case["samples_per_s"]["median"] > 0 and len(case["samples_per_s"]["repeats"]) == 1
    assert report["config"]["size"] == 24 and report["config"]["workers"] == [0, 2]
    text = out.read_text()
    assert text.startswith("# earlier runs\n\n")  # appended after a blank line, nothing lost
    assert "| group | loader | workers |" in text and "| loader ÷ kernel |" in text
    assert text.split("\n", 2)[2].strip() in done.stdout  # what it appends, it prints
    assert "missed" not in text and "Why" not in text  # judging is RESULTS.md's prose
    assert chart.read_bytes()[:4] == b"\x89PNG"


def test_benchmarks_change_no_file_unless_told(tmp_path, monkeypatch, capsys):
    """Every benchmark's ``--out`` is the same option, None by default: a bare run only prints
    (``benchmarks/RESULTS.md`` once grew a section from each trial run)."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import argparse

        from _results import add_out, publish
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    parser = argparse.ArgumentParser()
    add_out(parser)
    monkeypatch.chdir(tmp_path)
    publish("| a |\n", parser.parse_args([]).out)
    assert list(tmp_path.iterdir()) == [] and capsys.readouterr().out == "| a |\n"
    out = parser.parse_args(["--out", str(tmp_path / "R.md")]).out
    out.write_text("kept\n")
    publish("\n| a |\n", out)
    publish("| b |", out)
    assert out.read_text() == "kept\n\n| a |\n\n| b |\n"
    scripts = sorted((ROOT / "benchmarks").glob("*.py"))
    takes_out = [p.name for p in scripts if '"--out"' in p.read_text()]
    assert takes_out == ["_results.py", "device.py"]  # device.py's --out is a folder, required
