"""Progress: plain lines with count, rate and ETA where output is not a terminal, a line even
while no update comes, and the commands that run long print them (through the real CLI)."""

from __future__ import annotations

import io
import time

import numpy as np
import pytest
from rich.console import Console
from typer.testing import CliRunner

from streamvol.cli import app
from streamvol.progress import format_seconds, plain_line, progress

runner = CliRunner()
EVERY = {"STREAMVOL_PROGRESS_EVERY": "0"}  # a line on every update


def test_plain_line_says_count_rate_and_eta():
    line = plain_line("epoch 2/10", 120, 300, 3.0, unit="batches", per=16, rate_unit="samples")
    assert line == "epoch 2/10: 120/300 batches, 640 samples/s, ETA 4.5 s"
    assert plain_line("writing", 3, 3, 2.0, unit="shards") == (
        "writing: 3/3 shards, 1.5 shards/s, done in 2.0 s"
    )
    assert plain_line("planning", 0, None, 12.0, unit="shards") == "planning, 12 s elapsed"
    assert format_seconds(125) == "2 min 05 s" and format_seconds(3725) == "1 h 02 min"


def _plain_console() -> tuple[Console, io.StringIO]:
    buffer = io.StringIO()
    return Console(file=buffer, force_terminal=False, width=100), buffer


def test_plain_lines_every_few_seconds_not_every_update():
    console, buffer = _plain_console()
    with progress(console, every=3600) as show:
        job = show.job("epoch 1/1", 100, unit="batches")
        for done in range(1, 101):
            job(done, 100)
    assert buffer.getvalue() == ""  # quick: no line, the caller's summary suffices
    console, buffer = _plain_console()
    with progress(console, every=0) as show:
        job = show.job("epoch 1/1", 4, unit="batches", per=8, rate_unit="samples")
        for done in range(5):  # 0: the step starts
            job(done, 4)
            time.sleep(0.01)
    lines = buffer.getvalue().splitlines()
    assert lines[0].startswith("epoch 1/1: 0/4 batches, ") and lines[0].endswith("elapsed")
    assert lines[1].startswith("epoch 1/1: 1/4 batches, ") and "samples/s, ETA" in lines[1]
    assert lines[-1].startswith("epoch 1/1: 4/4 batches") and "done in" in lines[-1]


def test_a_silent_step_still_prints_a_line():
    """A step that sends no update (planning, a slow first batch) is not silent for long."""
    console, buffer = _plain_console()
    with progress(console, every=0.3) as show:
        show.job("shard: reading sources, planning crops", unit="shards")
        time.sleep(1.2)
    lines = buffer.getvalue().splitlines()
    assert len(lines) >= 2
    assert all(line.startswith("shard: reading sources, planning crops, ") for line in lines)
    assert lines[-1].endswith("s elapsed")


def test_on_a_terminal_a_bar_with_rate_and_eta():
    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=True, width=100)
    with progress(console) as show:
        job = show.job("epoch 1/3", 10, unit="batches", per=16, rate_unit="samples")
        for done in range(1, 11):
            job(done, 10)
            time.sleep(0.02)
        show.bar.refresh()
        text = buffer.getvalue()
    assert "epoch 1/3" in text and "10/10" in text and "samples/s" in text and "ETA" in text
    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=True, width=100)
    with progress(console) as show:  # the next item, counting something else
        job = show.job("TS_0 (1/2)", 4, unit="windows")
        job(4, 4)
        job.restart("best weights", 10, unit="batches", per=16, rate_unit="samples")
        job(3, 10)
        time.sleep(0.02)
        job(5, 10)
        show.bar.refresh()
        text = buffer.getvalue()
    assert "best weights" in text and "5/10" in text and "batches" in text and "samples/s" in text


def test_on_a_terminal_slow_steps_get_rate_and_eta_after_the_first(monkeypatch):
    """A batch a minute and a half (the default U-Net at 64^3 on 2 cores): rich's own speed
    estimate needs two updates within 30 s and never shows one; the bar's rate and ETA come from
    the first update, as the plain lines' do, and the elapsed time shows before any batch."""
    from streamvol import progress as module

    clock = [1000.0]
    monkeypatch.setattr(module.time, "monotonic", lambda: clock[0])
    console = Console(file=io.StringIO(), force_terminal=True, width=120)
    with progress(console) as show:
        job = show.job("epoch 1/2", 36, unit="batches", per=4, rate_unit="samples")
        job(0, 36)
        clock[0] += 40
        column = module._StatsColumn()
        task = show.bar.tasks[0]
        assert column.render(task).plain == "40 s elapsed"
        clock[0] += 55
        job(1, 36)
        assert column.render(task).plain == "0.0421 samples/s, ETA 55 min 25 s"
        assert job.stats() == job.line().split("batches, ")[1]  # the same as the plain line


def test_each_item_gets_its_own_count_and_clock(monkeypatch):
    """The volumes of a prediction: a volume's rate, ETA and time taken are its own, not those of
    the job since the first volume began (a second volume of 75 windows once read "ETA 3 min 53 s"
    where it took 26 s); a restart can count something else."""
    from streamvol import progress as module

    clock = [1000.0]
    monkeypatch.setattr(module.time, "monotonic", lambda: clock[0])
    console, buffer = _plain_console()
    job = module.Display(console, every=0).job("predict", unit="windows")  # no ticker thread
    for name in ("TS_0 (1/2)", "TS_1 (2/2)"):
        for done in (0, 15, 30):
            job.item(name, done, 30)
            clock[0] += 15
        clock[0] += 100  # finding peaks, writing picks: no update
    job.restart("best weights", 8, unit="batches", per=4, rate_unit="samples")
    job(0, 8)
    clock[0] += 2
    job(1, 8)
    assert buffer.getvalue().splitlines() == [
        "TS_0 (1/2): 0/30 windows, 0.0 s elapsed",
        "TS_0 (1/2): 15/30 windows, 1 windows/s, ETA 15 s",
        "TS_0 (1/2): 30/30 windows, 1 windows/s, done in 30 s",
        "TS_1 (2/2): 0/30 windows, 0.0 s elapsed",
        "TS_1 (2/2): 15/30 windows, 1 windows/s, ETA 15 s",
        "TS_1 (2/2): 30/30 windows, 1 windows/s, done in 30 s",
        "best weights: 0/8 batches, 0.0 s elapsed",
        "best weights: 1/8 batches, 2 samples/s, ETA 14 s",
    ]


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    """Sixteen labelled volumes (classes a and b), one crop each."""
    root = tmp_path_factory.mktemp("progress")
    src = root / "src"
    src.mkdir()
    rng = np.random.default_rng(0)
    rows = ["sample,class"]
    for i in range(16):
        np.save(src / f"v{i:02d}.npy", rng.normal(size=(6, 8, 8)).astype(np.float32))
        rows.append(f"v{i:02d},{'ab'[i % 2]}")
    (src / "classes.csv").write_text("\n".join(rows) + "\n")
    return src


def test_shard_train_evaluate_predict_print_progress_lines(labelled, tmp_path):
    shards = tmp_path / "shards"
    args = ["shard", str(labelled), "--out", str(shards), "--plan", "sample", "--crop", "6,8,8"]
    args += ["--context", "0", "--shard-size", "2", "--split", "0.5,0.25,0.25"]
    done = runner.invoke(app, args, env=EVERY)
    assert done.exit_code == 0, done.output
    assert "shard: writing: 1/" in done.output and " shards, " in done.output
    assert "done in" in done.output

    train = ["train", str(shards), "--model", "simple_cnn", "--epochs", "2", "--batch-size", "4"]
    train += ["--workers", "0", "--augment", "flips", "--runs", str(tmp_path), "--name", "r"]
    done = runner.invoke(app, train, env=EVERY)
    assert done.exit_code == 0, done.output
    out, r = done.output, tmp_path / "r"
    for text in ("epoch 1/2: 1/", "epoch 2/2: 1/", "epoch 1/2 validation: 1/"):
        assert text in out, out
    assert "samples/s, ETA" in out and "validation of the best weights: " in out
    assert "epoch 2/2: train_loss " in out  # the epoch's summary line
    start = out.splitlines()[0]  # what runs, before the first batch
    assert start.startswith("simple_cnn for classification (") and "M parameters) on cpu" in start
    assert start.endswith(
        f"float32: 2 batches of 4 an epoch, 2 epochs, 0 loader workers, --augment flips in the "
        f"loader -> {r}"
    )

    done = runner.invoke(app, ["evaluate", str(tmp_path / "r"), "--split", "test"], env=EVERY)
    assert done.exit_code == 0, done.output
    assert "evaluate test: 1/1 batches" in done.output and "test: " in done.output
    predict = ["predict", str(tmp_path / "r"), "--out", str(tmp_path / "p.csv")]
    done = runner.invoke(app, predict, env=EVERY)
    assert done.exit_code == 0, done.output
    assert "predict test: 1/1 batches" in done.output


def test_cv_and_bench_print_progress_lines(labelled, tmp_path):
    shards = tmp_path / "folds"
    args = ["shard", str(labelled), "--out", str(shards), "--plan", "sample", "--crop", "6,8,8"]
    done = runner.invoke(app, [*args, "--context", "0", "--folds", "2"])
    assert done.exit_code == 0, done.output
    cv = ["cv", str(shards), "--model", "simple_cnn", "--epochs", "1", "--batch-size", "4"]
    cv += ["--workers", "0", "--augment", "flips", "--runs", str(tmp_path)]
    done = runner.invoke(app, cv, env=EVERY)
    assert done.exit_code == 0, done.output
    assert "fold0 (1/2) epoch 1/1: 1/" in done.output
    assert "fold1 (2/2) epoch 1/1: 1/" in done.output
    assert "fold1: accuracy " in done.output  # each fold's result, named as its split

    bench = ["bench", str(shards), "--split", "fold0", "--workers", "0", "--modes", "none"]
    bench += ["--batches", "2", "--batch-size", "2", "--repeats", "1", "--warmup", "1"]
    done = runner.invoke(app, bench, env=EVERY)
    assert done.exit_code == 0, done.output
    assert "bench: 1/3 batches" in done.output and "bench: 3/3 batches" in done.output
