"""`streamvol bench` on a tiny shard set: valid JSON with every field, stage times that add up
to the wall time, the verdict on given rates and about the configuration training uses, and a
plot with whole worker counts."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from streamvol.bench import BenchConfig, describe, measure, verdict
from streamvol.cli import app
from streamvol.core.heap import keep_freed_memory
from streamvol.errors import BadOption
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
        "--modes",
        "none,cpu,gpu",
        "--augment",
        "flips",
        "--train-workers",
        "2",
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
    assert set(data) == {"config", "device", "machine", "results", "trainer", "verdict", "notes"}
    # the grid, then the configuration training uses (cpu augmentation, 2 workers), not in it
    assert [(r["workers"], r["mode"]) for r in data["results"]] == [
        *[(w, m) for m in ("none", "cpu", "gpu") for w in (0, 1)],
        (2, "cpu"),
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
    compared = data["trainer"]["compared_with"]
    assert (compared["mode"], compared["workers"], compared["augment"]) == ("cpu", 2, "flips")
    trained = data["results"][-1]["samples_per_s"]["median"]
    assert data["trainer"]["loader_over_trainer"] == pytest.approx(
        trained / data["trainer"]["samples_per_s"]
    )
    assert "--augment flips --workers 2" in data["verdict"]
    assert data["verdict"] in result.output  # one line, not wrapped
    assert (tmp_path / "b.png").read_bytes()[:4] == b"\x89PNG"
    if not torch.cuda.is_available():  # gpu mode ran the GPU code on the CPU device: said so
        gpu = [r for r in data["results"] if r["mode"] == "gpu"]
        assert {r["augment_device"] for r in gpu} == {"cpu"}
        assert any("augment gpu ran on the cpu device" in n for n in data["notes"])
        assert "gpu ran on the cpu device" in " ".join(result.output.split())


@pytest.mark.parametrize("mode", ["none", "cpu"])
def test_stage_times_fit_in_the_wall_time(tiny, mode):
    """Without workers every stage runs in the timed process: their sum cannot exceed the wall
    time (what else the process waits on, on a busy machine, is not a stage's)."""
    config = BenchConfig(shards=str(tiny), batch_size=4, batches=6, repeats=2, warmup=1)
    m = measure(config, 0, mode, torch.device("cpu"))
    stages = sum(m.stages_ms.values())
    assert all(v >= 0 for v in m.stages_ms.values()) and 0 < stages <= 1.05 * m.total_ms
    assert m.mvoxel_per_s == pytest.approx(m.median * 512 / 1e6)


def test_verdict_on_given_rates():
    text, wait = verdict(720, 400, configuration="--augment cryoet --workers 2")
    assert text == (
        "the loader keeps up with --augment cryoet --workers 2: 720 samples/s, 1.8x the "
        "trainer's 400"
    )
    assert wait == 0.0
    text, wait = verdict(260, 400, configuration="--augment cryoet --workers 2")
    assert text.startswith(
        "the loader does not keep up with --augment cryoet --workers 2: 260 of the trainer's "
        "400 samples/s (65%); the trainer would wait 35% of the time"
    )
    assert "no measured configuration keeps up" in text and wait == pytest.approx(0.35)
    others = [("--augment none --workers 0", 9000.0), ("--augment cryoet --workers 8", 450.0)]
    text, _ = verdict(260, 400, configuration="--augment cryoet --workers 2", others=others)
    assert text.endswith("; --augment none --workers 0 keeps up (9000 samples/s)")
    text, _ = verdict(708, 1.04, configuration="--augment default --workers 2")  # a U-Net on CPU
    assert text.endswith(": 708 samples/s, 681x the trainer's 1.0")
    text, _ = verdict(0.3, 0.9, configuration="--workers 2")
    assert "0.30 of the trainer's 0.90 samples/s (33%)" in text


def test_the_verdict_is_about_the_trained_configuration_not_the_fastest():
    """The issue's case: 0 workers without augmentation is fastest, but training augments."""
    config = BenchConfig(shards="x", augment="cryoet", train_workers=2, model="simple_cnn")
    assert config.trained == ("cpu", 2)
    assert config.grid()[-1] == ("cpu", 2)  # measured although --workers has 0, 1, 2 already
    assert config.grid().count(("cpu", 2)) == 1
    gpu = BenchConfig(shards="x", augment_device="gpu", modes=("none",), model="m")
    assert gpu.trained == ("gpu", 2) and gpu.grid()[-1] == ("gpu", 2)
    assert BenchConfig(shards="x", augment="none", model="m").trained == ("none", 2)
    assert describe("gpu", 4, "default") == "--augment default --augment-device gpu --workers 4"


def test_bad_bench_options_name_the_value(tiny):
    with pytest.raises(BadOption, match="modes='tpu'"):
        BenchConfig(shards=str(tiny), modes=("tpu",))
    with pytest.raises(BadOption, match=r"augment='none,cpu,gpu'.*not modes \(none, cpu, gpu"):
        BenchConfig(shards=str(tiny), augment="none,cpu,gpu")  # the old meaning of --augment
    with pytest.raises(BadOption, match="batches=0"):
        BenchConfig(shards=str(tiny), batches=0)


def test_model_step_is_timed_for_the_task_asked(tiny):
    """A U-Net on a classification set is refused as train refuses it, and timed for
    segmentation when asked (bench --task, as train --task); a bad task names its value."""
    from streamvol.bench.loader import trainer_rate

    config = BenchConfig(shards=str(tiny), batch_size=2, model="unet3d")
    with pytest.raises(BadOption, match=r"model='unet3d'.*or --task segmentation"):
        trainer_rate(config, torch.device("cpu"), steps=1, warmup=0)
    seg = BenchConfig(shards=str(tiny), batch_size=2, model="unet3d", task="segmentation")
    timed = trainer_rate(seg, torch.device("cpu"), steps=1, warmup=0)
    assert timed["model"] == "unet3d" and timed["samples_per_s"] > 0 and timed["steps"] == 1
    # a slow step (a U-Net on a CPU) is timed over 3 steps, not 10, once past the budget
    ticks = []
    timed = trainer_rate(seg, torch.device("cpu"), budget_s=0, tick=lambda: ticks.append(1))
    assert timed["steps"] == 3 and len(ticks) == 1 + 3
    with pytest.raises(BadOption, match=r"task='segment'.*classification, segmentation"):
        BenchConfig(shards=str(tiny), task="segment")


def test_preset_must_fit_the_stored_margin(tiny, tmp_path):

    flat = tmp_path / "flat"
    src = tiny.parent / "src"
    shard(parse_config([src], crop=8, context=0, split="1", shard_size=8), flat)
    config = BenchConfig(shards=str(flat), batch_size=2, batches=1, repeats=1)
    with pytest.raises(BadOption, match=r"augment='default'.*margin of \[0, 0, 0\]"):
        measure(config, 0, "cpu", torch.device("cpu"))
    assert measure(config, 0, "none", torch.device("cpu")).median > 0


def test_bench_plot_has_whole_worker_ticks_and_marks_the_verdict(tiny, tmp_path, monkeypatch):
    from streamvol.bench import plot, run_bench
    from streamvol.core import files

    saved = []
    real = files.save_figure
    monkeypatch.setattr(files, "save_figure", lambda fig, p, **k: saved.append(fig) or real(fig, p))
    config = BenchConfig(
        shards=str(tiny), workers=(0, 1), modes=("none",), batch_size=4, batches=1, repeats=1,
        warmup=1, augment="flips", train_workers=0, model="simple_cnn",
    )  # fmt: skip
    plot(run_bench(config), tmp_path / "b.png")
    (ax,) = saved[-1].axes
    assert list(ax.get_xticks()) == [0, 1]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "the verdict's configuration" in labels and "no augmentation" in labels
    assert "--augment flips" in ax.get_title() and "split train" in ax.get_title()


def test_a_trainer_step_that_does_not_fit_is_refused_before_measuring(tiny, monkeypatch):
    """As ``train`` warns, ``bench --model`` refuses a step the memory cannot hold, naming a
    batch size that fits, before the loader's measurements rather than killed after them."""
    from streamvol.bench import run_bench
    from streamvol.train import setup

    config = BenchConfig(shards=str(tiny), batch_size=8, batches=1, model="simple_cnn")
    monkeypatch.setattr(setup, "available_memory", lambda device: 1024)
    calls = []
    with pytest.raises(BadOption, match=r"batch_size=8: a training step of simple_cnn .*crops"):
        run_bench(config, progress=lambda done, total: calls.append(done))
    assert calls == []  # nothing measured
    # 4 samples fit: bench names that batch size, and no --accumulate (a trainer's option)
    monkeypatch.setattr(setup, "activation_bytes", lambda *args: 1000)
    monkeypatch.setattr(setup, "available_memory", lambda device: int(1000 * 1.2 * 4.5))
    with pytest.raises(BadOption, match=r"; --batch-size 4 fits$"):
        run_bench(config, progress=lambda done, total: calls.append(done))
    keep_freed_memory()  # the check gave freed memory back: keep it for later tests
