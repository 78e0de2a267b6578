"""``benchmarks/device.py`` on a machine without CUDA: it exits 0 at once and says, in its JSON and
its markdown, which sections it skipped (the CUDA run itself needs a GPU machine); its dry run
rehearses every section on the CPU without an error."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _device(out: Path, *args: str, timeout: float) -> subprocess.CompletedProcess:
    """``python benchmarks/device.py --out OUT ARGS`` with CUDA hidden."""
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "device.py"), "--out", str(out), *args],
        cwd=out.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_device_script_without_cuda_skips_every_section_and_exits_0(tmp_path):
    out = tmp_path / "device"
    done = _device(out, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "no CUDA device" in done.stdout
    report = json.loads((out / "device.json").read_text())
    assert report["cuda"] is False and report["sections"] == {}
    skipped = [line.split(":")[0] for line in report["skipped"]]
    assert skipped == ["tests", "routes", "augment", "feed"]
    assert "no CUDA" in report["reason"] and report["machine"]["cpus"] >= 1
    text = (out / "device.md").read_text()
    assert "nothing was measured" in text and "- feed:" in text
    assert not list(out.glob("*.log"))  # no section started


def _errors(x: object, path: str = "") -> list[str]:
    """Every ``error`` recorded anywhere in a report, with where it was."""
    if isinstance(x, dict):
        found = [f"{path}: {x['error']}"] if "error" in x else []
        return found + [e for k, v in x.items() for e in _errors(v, f"{path}/{k}")]
    if isinstance(x, list):
        return [e for i, v in enumerate(x) for e in _errors(v, f"{path}[{i}]")]
    return []


@pytest.mark.slow
def test_dry_run_runs_every_section_on_the_cpu_without_an_error(tmp_path):
    """The rehearsal of the one GPU call: every section on the CPU at toy sizes. A row that
    records an error (a trainer refused, a library call that no longer works) would be a
    wasted device run, so none may."""
    out = tmp_path / "dry"
    done = _device(out, "--dry-run", timeout=400)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads((out / "device.json").read_text())
    assert {k: v["status"] for k, v in report["sections"].items()} == dict.fromkeys(
        ["tests", "routes", "augment", "feed"], "ok"
    )
    # MONAI is the bench extra, not a test dependency: without it, its rows say so, no more
    monai = importlib.util.find_spec("monai") is not None
    missing = "No module named 'monai'"
    assert [e for e in _errors(report) if monai or missing not in e] == []
    tests = report["sections"]["tests"]["results"]["counts"]
    assert tests["failures"] == tests["errors"] == 0 and tests["tests"] > tests["skipped"]
    augment = report["sections"]["augment"]["results"]["rows"]
    measured = {"streamvol (kornia geometry + torch)", "kornia AugmentationSequential"}
    assert {r["library"] for r in augment if r.get("crops_per_s")} == (
        measured | {"MONAI (per crop)"} if monai else measured
    ) | {"noise field, torch int64 ops"}
    feed = report["sections"]["feed"]["results"]
    assert set(feed["trainers"]) == {"unet3d", "se_resnet3d"}
    assert all(t["samples_per_s"] > 0 for t in feed["trainers"].values())
    assert [(r["mode"], "busy" in r) for r in feed["fed"]] == [("gpu", True), ("cpu", True)]
    assert "## feed: ok" in (out / "device.md").read_text()


def test_a_failed_sections_log_tail_is_in_the_markdown():
    """What RESULTS.md takes says why a section failed, not just its exit status."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import device
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    section = {"status": "exit 1", "seconds": 2.0, "log_tail": "ModuleNotFoundError: No 'dask'"}
    text = device.markdown({"cuda": True, "sections": {"feed": section, "tests": {"status": "ok"}}})
    assert "## feed: exit 1 (2 s)" in text and "ModuleNotFoundError: No 'dask'" in text
    assert text.count("```") == 2  # the ok section shows no log
