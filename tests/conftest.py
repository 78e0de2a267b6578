"""Suite-wide: torch runs one thread in each process; tests marked ``slow`` run first; tests
marked ``gpu`` run only where CUDA is available (skipped, with the reason, elsewhere); and,
session-scoped, a tiny synthetic copick project, its points shards, and a detection run trained
on them through the CLI (for the detection trainer and predict tests)."""

from __future__ import annotations

import os

# Two test workers share the machine's cores, and the CLI runs they start share them too:
# torch's OpenMP threads in each process waited on each other far more than they gained (the
# suite took 15 minutes on 2 cores, 9 with one thread each). Set before torch is imported, and
# inherited by every child process; a test that needs torch's default count says so
# (``guard.default_threads``).
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest
import torch

FIRST = "test_readme.py"  # the longest test: every README example, in order


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # the long tests first, the README's examples (a third of the suite's time) before them:
    # under ``-n 2`` with work stealing (pyproject's addopts) the other worker takes the rest,
    # where a long test started late kept the suite waiting on it alone
    items.sort(key=lambda it: (it.get_closest_marker("slow") is None, it.path.name != FIRST))
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA: torch.cuda.is_available() is False")
    for item in items:
        if item.get_closest_marker("gpu") is not None:
            item.add_marker(skip)


@pytest.fixture
def cut_shard_writes(monkeypatch):
    """``cut(n)`` makes the n-th shard task stop with KeyboardInterrupt (a power cut, a Ctrl-C)
    and returns the names of the shards tasks started, in order; ``cut.restore()`` writes
    normally again."""
    import streamvol.shard.run as run  # where each dask task calls write_shard

    real = run.write_shard

    def cut(n: int) -> list[str]:
        calls: list[str] = []

        def write(path, *args, **kwargs):
            calls.append(path.name)
            if len(calls) == n:
                raise KeyboardInterrupt("power cut")
            return real(path, *args, **kwargs)

        monkeypatch.setattr(run, "write_shard", write)
        return calls

    cut.restore = lambda: monkeypatch.setattr(run, "write_shard", real)
    return cut


PICK_TRAIN = [
    "--task", "detection", "--model", "unet3d", "--width", "8", "--depth", "2",
    "--epochs", "8", "--batch-size", "8", "--lr", "0.01", "--warmup", "0",
    "--workers", "0", "--augment", "flips", "--target", "sphere",
]  # fmt: skip


@pytest.fixture(scope="session")
def pick_project(tmp_path_factory):
    """Four runs of (64, 128, 128) at 10 A (four particles of each type per run), sharded at
    level 1 (20 A): 16^3 crops on every pick plus as many background crops, one run each
    for validation and test."""
    from streamvol import synth
    from streamvol.shard import parse_config, shard

    root = tmp_path_factory.mktemp("picks")
    data = synth.make("tomograms", root / "project", n=4, size=(64, 128, 128), seed=5)
    shards = root / "shards"
    config = parse_config(
        [data], plan="points", crop="16", negatives=1.0, augment="flips", level=1,
        split="0.5,0.25,0.25", shard_size=16,
    )  # fmt: skip
    shard(config, shards)
    return data, shards


@pytest.fixture(scope="session")
def pick_run(pick_project, tmp_path_factory):
    """A detection run (sphere targets, a tiny U-Net) trained by ``streamvol train``."""
    from typer.testing import CliRunner

    from streamvol.cli import app

    _, shards = pick_project
    runs = tmp_path_factory.mktemp("pickruns")
    args = ["train", str(shards), *PICK_TRAIN, "--runs", str(runs), "--name", "pick"]
    every_update = {"STREAMVOL_PROGRESS_EVERY": "0"}  # a progress line on every update
    result = CliRunner().invoke(app, args, env=every_update)
    assert result.exit_code == 0, result.output
    return runs / "pick", result.output
