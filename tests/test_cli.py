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
    "synth", "shard", "inspect", "train", "pretrain", "evaluate", "predict", "compare", "score",
    "cv", "bench", "models", "demo",
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


@pytest.mark.parametrize(
    "command",
    ["shard", "inspect", "train", "pretrain", "evaluate", "predict", "compare", "cv", "bench"],
)
def test_every_command_that_reads_or_writes_shards_takes_storage_options(command):
    result = runner.invoke(app, [command, "--help"], env={"COLUMNS": "200"})
    assert "--storage-options" in result.stdout


def test_bad_storage_options_are_one_line(tmp_path):
    result = runner.invoke(app, ["inspect", str(tmp_path), "--storage-options", "[1]"])
    assert result.exit_code == 1
    assert "--storage-options [1]: expected a JSON object" in result.output
    assert "Traceback" not in result.output


@pytest.fixture(scope="module")
def small_set(tmp_path_factory):
    import numpy as np

    from streamvol.shard import parse_config, shard

    root = tmp_path_factory.mktemp("cli")
    (root / "src").mkdir()
    np.save(root / "src" / "v.npy", np.random.default_rng(0).normal(size=(4, 8, 8)))
    shard(parse_config([root / "src"], crop=4, context=0, split="1"), root / "set")
    return root / "set"


def _env(**extra):
    import os

    root = Path(__file__).resolve().parents[1]
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE")}
    return {**env, "PYTHONPATH": os.pathsep.join([str(root), *sys.path]), **extra}


@pytest.mark.parametrize("module", ["streamvol", "streamvol.cli"])
def test_python_dash_m_runs_the_app_and_other_ranks_stay_quiet(small_set, module):
    cmd = [sys.executable, "-m", module, "inspect", str(small_set), "--verify"]
    rank0 = subprocess.run(cmd, capture_output=True, text=True, env=_env(RANK="0"))
    assert rank0.returncode == 0 and "verified" in rank0.stdout
    rank1 = subprocess.run(cmd, capture_output=True, text=True, env=_env(RANK="1"))
    assert rank1.returncode == 0 and rank1.stdout == "" and rank1.stderr == ""


def test_under_torchrun_each_line_is_printed_once(small_set):
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2"]
    inspect = [sys.executable, "-m", "streamvol", "inspect", str(small_set), "--verify"]
    done = subprocess.run(
        [*torchrun, "--no-python", *inspect],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("verified: every shard") == 1
    assert done.stdout.count("made by:") == 1


def test_evaluate_and_predict_of_no_run_say_so_in_one_line(tmp_path):
    for command in (["evaluate", str(tmp_path / "nosuch")], ["predict", str(tmp_path / "nosuch")]):
        result = runner.invoke(app, command)
        assert result.exit_code == 1
        assert "nosuch: not a run folder (no such folder)" in result.output
        assert "streamvol train" in result.output
        assert "Errno" not in result.output and "Traceback" not in result.output
    (tmp_path / "empty").mkdir()
    result = runner.invoke(app, ["evaluate", str(tmp_path / "empty")])
    assert result.exit_code == 1 and "no config.json in it" in result.output


def test_synth_into_a_full_folder_names_the_flag(tmp_path):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x.txt").write_text("mine")
    result = runner.invoke(app, ["synth", "spots", str(tmp_path / "full"), "--n", "8"])
    assert result.exit_code == 1
    assert "use --overwrite" in result.output and "overwrite=True" not in result.output


def test_shard_help_lists_the_presets_and_explains_the_tasks():
    help_text = runner.invoke(app, ["shard", "--help"], env={"COLUMNS": "200"}).stdout
    text = " ".join(help_text.replace("│", " ").split())
    for preset in ("none", "flips", "default", "cryoet", "TOML/YAML"):
        assert preset in text
    assert "detection: crops keep every pick inside them as points" in text
    assert "--voxel-size" in text


def test_output_that_is_not_a_terminal_is_100_columns_wide(monkeypatch):
    import io

    from streamvol.cli import WIDTH, _out

    monkeypatch.delenv("COLUMNS", raising=False)  # where set, it decides
    console = _out()
    console.file = io.StringIO()
    assert not console.is_terminal and console.width == WIDTH == 100
    monkeypatch.setenv("COLUMNS", "120")
    assert _out().width == 120


def test_command_help_reads_as_paragraphs_not_as_the_docstrings_lines():
    text = CliRunner().invoke(app, ["train", "--help"], env={"COLUMNS": "200"}).stdout
    assert "targets drawn from the augmented picks; after training" in text


def test_the_shard_table_counts_unlabelled_crops_of_classification_sets_only(tmp_path):
    """A segmentation set's crops are labelled by their masks: no 'unlabelled' row for them;
    a classification set's crops without a class are counted."""
    import numpy as np
    import tifffile

    rng = np.random.default_rng(0)
    tifffile.imwrite(tmp_path / "stack.tif", rng.integers(0, 9, (8, 16, 16), dtype=np.uint16))
    tifffile.imwrite(tmp_path / "stack_mask.tif", rng.integers(0, 2, (8, 16, 16), dtype=np.uint8))
    args = ["--crop", "8", "--context", "0", "--split", "1"]
    seg = runner.invoke(app, ["shard", str(tmp_path / "stack.tif"), "--out", str(tmp_path / "s"),
                              *args])  # fmt: skip
    assert seg.exit_code == 0, seg.output
    assert "segmentation: crop 8x8x8" in seg.output and "unlabelled" not in seg.output
    (tmp_path / "stack_mask.tif").unlink()
    cls = runner.invoke(app, ["shard", str(tmp_path / "stack.tif"), "--out", str(tmp_path / "c"),
                              *args])  # fmt: skip
    assert cls.exit_code == 0, cls.output
    assert "classification: crop 8x8x8" in cls.output
    assert [
        line.split("│")[2].strip() for line in cls.output.splitlines() if "unlabelled" in line
    ] == ["4"]


@pytest.mark.parametrize(("rate", "shown"), [(0.364, "0.364"), (41.27, "41.3"), (321.4, "321")])
def test_epoch_lines_keep_slow_rates_readable(rate, shown):
    from streamvol.cli import _epoch_line

    values = {"epoch": 1, "train_loss": 1.5, "seconds": 175.5, "train_samples_per_s": rate}
    assert _epoch_line(values, 2) == f"epoch 1/2: train_loss 1.500 (175.5 s, {shown} samples/s)"


def test_the_recorded_shard_command_leaves_storage_options_out():
    from streamvol.cli import _recorded_command

    secret = '{"key": "k", "secret": "s"}'
    for args in (["--storage-options", secret], [f"--storage-options={secret}"]):
        made_by = _recorded_command(["shard", "src", "--out", "s3://b/set", *args, "--seed", "1"])
        assert made_by.startswith("streamvol shard src --out s3://b/set ")
        assert made_by.endswith("<not recorded>' --seed 1") and '"secret"' not in made_by


def test_shard_shows_what_the_split_cost(tmp_path):
    """The split's warnings reach the terminal as lines, and inspect repeats them."""
    import numpy as np

    (tmp_path / "src").mkdir()
    np.save(tmp_path / "src" / "v.npy", np.zeros((8, 8, 32), np.float32))
    args = ["shard", str(tmp_path / "src"), "--out", str(tmp_path / "set"), "--crop", "4"]
    done = runner.invoke(app, [*args, "--context", "0", "--split", "0.5,0.5"])
    assert done.exit_code == 0, done.output
    assert "warning: only one source ('v'): grouped its 32 crops into " in done.output
    done = runner.invoke(app, ["inspect", str(tmp_path / "set")])
    assert done.exit_code == 0 and "\nsplit: only one source ('v'): grouped " in done.output


def test_ctrl_c_says_how_to_go_on(tmp_path, cut_shard_writes):
    """A shard run stopped by Ctrl-C says that the same command resumes, and it does."""
    import numpy as np

    (tmp_path / "src").mkdir()
    for i in range(3):
        np.save(tmp_path / "src" / f"v{i}.npy", np.zeros((4, 8, 8), np.float32))
    args = ["shard", str(tmp_path / "src"), "--out", str(tmp_path / "set"), "--crop", "4"]
    args += ["--context", "0", "--split", "1", "--shard-size", "2", "--workers", "1"]
    cut_shard_writes(2)
    done = runner.invoke(app, args)
    assert done.exit_code == 130
    assert "interrupted; the same command again keeps the shards already written" in done.output
    cut_shard_writes.restore()
    done = runner.invoke(app, args)
    assert done.exit_code == 0 and "skipped 1 finished one," in done.output
