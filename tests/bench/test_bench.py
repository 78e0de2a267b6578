"""`streamvol bench` on a tiny shard set: valid JSON with every field, stage times that add up
to the wall time, and the verdict on given rates."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from streamvol.bench import BenchConfig, measure, verdict
from streamvol.cli import app
from streamvol.shard import parse_config, shard


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench")
    src = root / "src"
    src.mkdir()
    rng = np.random.default_rng(0)
    for i in range(4):
        np.save(src / f"v{i}.npy", rng.normal(size=(8, 16, 16)).astype(np.float32))
    (src / "classes.csv").write_text("sample,class\nv0,a\nv1,b\nv2,a\nv3,b\n")
    out = root / "shards"
    shard(parse_config([src], crop=8, split="1", shard_size=8), out)
    return out


def test_bench_cli_writes_json_with_every_field(tiny, tmp_path):
    args = [
        "bench",
        str(tiny),
        "--workers",
        "0,1",
        "--augment",
        "none,cpu,gpu",
        "--batches",
        "2",
        "--batch-size",
        "4",
        "--repeats",
        "2",
        "--warmup",
        "1",
        "--model",
        "simple_cnn",
        "--json",
        str(tmp_path / "b.json"),
        "--plot",
        str(tmp_path / "b.png"),
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "b.json").read_text())
    assert set(data) == {"config", "device", "machine", "results", "trainer", "verdict"}
    assert [(r["workers"], r["mode"]) for r in data["results"]] == [
        (w, m) for m in ("none", "cpu", "gpu") for w in (0, 1)
    ]
    for r in data["results"]:
        assert set(r) >= {"samples_per_s", "mvoxel_per_s", "mb_per_s", "stages_ms", "total_ms"}
        assert set(r["samples_per_s"]) == {"median", "min", "max", "repeats"}
        assert len(r["samples_per_s"]["repeats"]) == 2
        assert (
            r["samples_per_s"]["min"] <= r["samples_per_s"]["median"] <= r["samples_per_s"]["max"]
        )
        assert set(r["stages_ms"]) == {"read", "augment", "collate", "h2d"}
    assert set(data["trainer"]) >= {"samples_per_s", "loader_over_trainer", "trainer_waits"}
    assert data["verdict"].startswith("the loader")
    assert (tmp_path / "b.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("mode", ["none", "cpu"])
def test_stage_times_add_up_to_the_wall_time(tiny, mode):
    import torch

    config = BenchConfig(shards=str(tiny), batch_size=4, batches=6, repeats=2, warmup=1)
    m = measure(config, 0, mode, torch.device("cpu"))
    stages = sum(m.stages_ms.values())
    assert 0.5 * m.total_ms <= stages <= 1.05 * m.total_ms
    assert m.mvoxel_per_s == pytest.approx(m.median * 512 / 1e6)


def test_verdict_on_given_rates():
    text, wait = verdict(loader_rate=500, trainer=400, workers=2, per_worker=250)
    assert text.startswith("the loader keeps up") and wait == 0.0
    text, wait = verdict(loader_rate=100, trainer=400, workers=2, per_worker=50)
    assert "bottleneck" in text and "6 more workers or --augment gpu" in text
    assert wait == pytest.approx(0.75)


def test_bad_bench_options_name_the_value(tiny):
    with pytest.raises(ValueError, match="--augment tpu"):
        BenchConfig(shards=str(tiny), modes=("tpu",))
    with pytest.raises(ValueError, match="--batches 0"):
        BenchConfig(shards=str(tiny), batches=0)


def test_preset_must_fit_the_stored_margin(tiny, tmp_path):
    import torch

    flat = tmp_path / "flat"
    src = tiny.parent / "src"
    shard(parse_config([src], crop=8, context=0, split="1", shard_size=8), flat)
    config = BenchConfig(shards=str(flat), batch_size=2, batches=1, repeats=1)
    with pytest.raises(ValueError, match=r"margin of \[0, 0, 0\].*--preset 'default'"):
        measure(config, 0, "cpu", torch.device("cpu"))
    assert measure(config, 0, "none", torch.device("cpu")).median > 0
