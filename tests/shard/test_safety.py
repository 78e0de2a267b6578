"""The sharder never writes silently wrong output: values that overflow the stored dtype, crops
larger than their volume, output that cannot fit, two writers in one folder, damaged shards on
resume, and a manifest or folder that do not agree."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest

from streamvol.core.lock import LOCK
from streamvol.errors import (
    BadVolumeValues,
    FolderLocked,
    LargeCropWarning,
    LargeOutputWarning,
    NotEnoughSpace,
    ShardError,
)
from streamvol.shard import parse_config, read_manifest, shard
from streamvol.shard.write import write_tar
from streamvol.stream import open_shards
from streamvol.stream.inspect import verify

ROOT = Path(__file__).resolve().parents[2]


def _nothing_written(out):
    return not out.exists() or not any(out.iterdir())


def _sources(tmp_path, n=4, shape=(8, 16, 16)):
    folder = tmp_path / "vols"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        np.save(folder / f"v{i}.npy", rng.normal(size=shape).astype(np.float32))
    return folder


# --- values the stored dtype cannot hold ------------------------------------------------------


def test_float16_overflow_is_refused_naming_the_range(tmp_path):
    big = (np.random.default_rng(0).random((32, 32, 32)) * 1e6).astype(np.float32)
    np.save(tmp_path / "big.npy", big)
    out = tmp_path / "o"
    config = parse_config([tmp_path / "big.npy"], crop=8, dtype="float16", split="1")
    with pytest.raises(BadVolumeValues, match=r"big\.npy.*float16.*65504.*--dtype keep.*uint8"):
        shard(config, out)
    assert _nothing_written(out)
    fits = (big / 100).astype(np.float32)  # within +-65504: stored as float16, no Inf
    np.save(tmp_path / "fits.npy", fits)
    shard(parse_config([tmp_path / "fits.npy"], crop=8, dtype="float16", split="1"), out)
    for sample in open_shards(out, normalize=False, decode_only=True):
        assert torch_isfinite(sample["image"])


def torch_isfinite(t):
    return bool(np.isfinite(t.numpy()).all())


def test_uint8_scaling_of_a_constant_volume_is_refused(tmp_path):
    np.save(tmp_path / "flat.npy", np.full((8, 16, 16), 7.0, np.float32))
    out = tmp_path / "o"
    with pytest.raises(BadVolumeValues, match=r"flat\.npy.*uint8.*both are 7.*--dtype keep"):
        shard(parse_config([tmp_path / "flat.npy"], crop=8, dtype="uint8", split="1"), out)
    assert _nothing_written(out)


# --- crops larger than the volume, output larger than the disk --------------------------------


def test_a_crop_larger_than_its_volume_warns(tmp_path):
    np.save(tmp_path / "small.npy", np.random.default_rng(0).normal(size=(4, 8, 8)))
    with pytest.warns(LargeCropWarning, match=r"small\.npy: crop 10x10x10.*volume 4x8x8"):
        shard(parse_config([tmp_path / "small.npy"], crop=10, context=0, split="1"), tmp_path / "o")


def test_output_beyond_max_bytes_is_refused_before_writing(tmp_path):
    src = _sources(tmp_path)
    config = parse_config([src], crop=8, context=0, split="1")  # 16 crops x 2 kB + headers
    out = tmp_path / "o"
    with pytest.raises(NotEnoughSpace, match=r"16 crops of 512 voxels.*81\.9 kB.*--max-bytes 10"):
        shard(config, out, max_bytes=10_000)
    assert _nothing_written(out)
    shard(config, out, max_bytes=200_000)
    assert verify(out) == []


def test_output_beyond_the_free_space_is_refused_before_writing(tmp_path):
    """A crop whose stored block alone exceeds the disk's free space (as --crop 500 on a small
    volume once filled the disk with .partial files)."""
    np.save(tmp_path / "vol.npy", np.random.default_rng(0).normal(size=(8, 16, 16)))
    free = shutil.disk_usage(tmp_path).free
    side = round((2 * free / 8) ** (1 / 3)) + 1  # float64: 8 bytes a voxel, twice the free
    out = tmp_path / "o"
    config = parse_config([tmp_path / "vol.npy"], crop=side, context=0, split="1")
    with (
        pytest.warns(LargeCropWarning),
        pytest.raises(NotEnoughSpace, match=r"o: the plan's 1 crops.*free"),
    ):
        shard(config, out)
    assert _nothing_written(out)


def test_output_many_times_its_sources_warns_naming_the_overlap(tmp_path):
    """Four 8x16x16 volumes, 12^3 blocks (8^3 crops, context 2) every voxel: 81 crops a
    volume, 68x its voxels; the same crops side by side (8x at stride 8) are not warned of."""
    src = _sources(tmp_path)
    dense = parse_config([src], crop=8, context=2, stride=1, split="1")
    with pytest.warns(
        LargeOutputWarning, match=r"324 crops store 68x the voxels.*blocks of 12x12x12 every 1x1x1"
    ):
        shard(dense, tmp_path / "dense")
    with warnings.catch_warnings():
        warnings.simplefilter("error", LargeOutputWarning)
        shard(parse_config([src], crop=8, context=2, split="1"), tmp_path / "tiled")


# --- one writer per folder --------------------------------------------------------------------

HOLDER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from streamvol.core.lock import folder_lock
    out, release = Path(sys.argv[1]), Path(sys.argv[2])
    with folder_lock(out):
        print("locked", flush=True)
        while not release.exists():
            time.sleep(0.05)
    """
)


def _env():
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), *sys.path])}


@pytest.fixture
def holder(tmp_path):
    """Another real process that holds the lock of ``tmp_path / "out"`` until released."""
    out, release = tmp_path / "out", tmp_path / "release"
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(out), str(release)],
        stdout=subprocess.PIPE,
        text=True,
        env=_env(),
    )
    assert proc.stdout.readline().strip() == "locked"
    yield out, proc
    release.touch()
    proc.wait(timeout=30)


def test_a_second_writer_is_refused_naming_the_holder(tmp_path, holder):
    out, proc = holder
    src = _sources(tmp_path)
    config = parse_config([src], crop=8, context=0, split="1")
    with pytest.raises(FolderLocked, match=rf"process {proc.pid} on host .* holds .*{LOCK}"):
        shard(config, out)
    with pytest.raises(FolderLocked):
        shard(config, out, overwrite=True)  # --overwrite deletes nothing of the holder's
    assert [p.name for p in out.iterdir()] == [LOCK]
    cli = [sys.executable, "-m", "streamvol.cli", "shard", str(src), "--out", str(out)]
    done = subprocess.run(  # the real CLI: one line, no traceback
        [*cli, "--crop", "8"],
        capture_output=True,
        text=True,
        env=_env(),
    )
    assert done.returncode == 1
    assert f"process {proc.pid}" in done.stderr and "Traceback" not in done.stderr


def test_a_stale_lock_of_a_dead_process_is_taken_over(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    out = tmp_path / "out"
    out.mkdir()
    import socket

    (out / LOCK).write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname()}))
    src = _sources(tmp_path)
    shard(parse_config([src], crop=8, context=0, split="1"), out)
    assert verify(out) == [] and not (out / LOCK).exists()


def test_the_lock_is_released_when_the_run_fails(tmp_path):
    src = _sources(tmp_path)
    out = tmp_path / "out"
    with pytest.raises(NotEnoughSpace):
        shard(parse_config([src], crop=8, context=0, split="1"), out, max_bytes=1)
    shard(parse_config([src], crop=8, context=0, split="1"), out)  # not locked out
    assert not (out / LOCK).exists()


def test_two_concurrent_cli_runs_leave_one_intact_set(tmp_path):
    src = _sources(tmp_path, n=6, shape=(16, 32, 32))
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "streamvol.cli", "shard", str(src), "--out", str(out)]
    cmd += ["--crop", "8", "--context", "2", "--split", "1", "--shard-size", "4"]
    procs = [
        subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
        for _ in range(2)
    ]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    assert any(code == 0 for code, _ in results)
    for code, err in results:
        assert "Traceback" not in err and "Errno" not in err
        assert code == 0 or "another `streamvol shard` is writing here" in err
    assert verify(out) == []


# --- resume and atomic writes -----------------------------------------------------------------


def _flip(path, at):
    data = bytearray(path.read_bytes())
    data[at] ^= 0x01
    path.write_bytes(bytes(data))


def test_resume_rewrites_a_shard_of_the_right_size_but_other_bytes(tmp_path):
    src = _sources(tmp_path)
    config = parse_config([src], crop=8, context=0, split="1", shard_size=4)
    out = tmp_path / "out"
    shard(config, out)
    victim = out / "train-000001.tar"
    size = victim.stat().st_size
    _flip(victim, size // 2)
    assert victim.stat().st_size == size
    again = shard(config, out)
    assert again.written == ["train-000001.tar"]
    assert verify(out) == []


def test_an_interrupted_write_leaves_no_tar_under_its_final_name(tmp_path):
    def samples():
        yield {"__key__": "a_z0_y0_x0", "image.npy": np.zeros((2, 2, 2), np.float32)}
        raise KeyboardInterrupt("power cut")

    path = tmp_path / "train-000000.tar"
    with pytest.raises(KeyboardInterrupt):
        write_tar(path, samples())
    assert not path.exists()


# --- the manifest and the folder agree --------------------------------------------------------


@pytest.fixture
def made(tmp_path):
    src = _sources(tmp_path)
    out = tmp_path / "out"
    shard(parse_config([src], crop=8, context=0, split="1", shard_size=4), out)
    return out


def test_verify_compares_the_sha256_of_bytes_no_member_checksum_covers(made):
    victim = made / "train-000002.tar"
    with tarfile.open(victim) as tar:
        first = tar.getmembers()[0]
    padding = first.offset_data + first.size  # zeros between the member and the next header
    assert first.size % 512 and victim.read_bytes()[padding] == 0
    _flip(victim, padding)
    assert [s["__key__"] for s in open_shards(made, shuffle=False)]  # the members still read
    problems = verify(made)
    assert len(problems) == 1 and "train-000002.tar: sha256 differs" in problems[0]


def test_verify_reports_a_data_byte_flip_of_the_same_size(made):
    victim = made / "train-000000.tar"
    _flip(victim, victim.stat().st_size // 3)
    assert any("train-000000.tar" in p for p in verify(made))


def test_verify_reports_tars_the_manifest_does_not_list(made):
    shutil.copy(made / "train-000000.tar", made / "train-000099.tar")
    problems = verify(made)
    assert problems == [f"{made / 'train-000099.tar'}: a tar the manifest does not list"]


@pytest.mark.parametrize("name", ["../../other/x.tar", "/etc/x.tar", "sub/x.tar", "..tar"])
def test_a_manifest_naming_files_outside_its_folder_is_refused(made, tmp_path, name):
    elsewhere = tmp_path / "other"
    elsewhere.mkdir()
    shutil.copy(made / "train-000000.tar", elsewhere / "x.tar")
    manifest = json.loads((made / "manifest.json").read_text())
    manifest["splits"]["train"][0]["name"] = name
    (made / "manifest.json").write_text(json.dumps(manifest))
    for read in (read_manifest, verify, open_shards):
        with pytest.raises(ShardError, match=r"not a file of the shard folder"):
            read(made)


def test_manifests_of_version_1_still_read(made):
    manifest = json.loads((made / "manifest.json").read_text())
    manifest["version"] = 1
    del manifest["checksum"]
    for rec in manifest["splits"]["train"]:
        del rec["checksums"]
    (made / "manifest.json").write_text(json.dumps(manifest))
    assert len(list(open_shards(made))) == 16
    assert verify(made) == []


def test_out_as_url_never_makes_a_local_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    src = _sources(tmp_path)
    url = "memory://streamvol-safety/set"
    result = shard(parse_config([src], crop=8, context=0, split="1", shard_size=4), url)
    assert result.out == url
    assert not any(p.name.endswith(":") for p in tmp_path.iterdir())
    assert verify(url) == []
    assert len(list(open_shards(url))) == 16
    with pytest.raises(ShardError, match=r"not empty.*--overwrite"):
        shard(parse_config([src], crop=4, context=0, split="1"), url)
    shard(parse_config([src], crop=4, context=0, split="1"), url, overwrite=True)
    assert read_manifest(url)["crop"] == [4, 4, 4] and verify(url) == []
