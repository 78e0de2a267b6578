"""``benchmarks/device.py`` on a machine without CUDA: it exits 0 at once and says, in its JSON and
its markdown, which sections it skipped (the CUDA run itself needs a GPU machine)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_device_script_without_cuda_skips_every_section_and_exits_0(tmp_path):
    out = tmp_path / "device"
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "device.py"), "--out", str(out)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
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
