"""Training under a real 2-process gloo group, as torchrun starts it: the ranks stay in step,
end with the same weights, and rank 0 alone writes the run folder."""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import socket
from types import SimpleNamespace

import torch
import torch.multiprocessing as mp


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _digest(model: torch.nn.Module) -> str:
    digest = hashlib.sha256()
    for value in model.state_dict().values():
        digest.update(value.numpy().tobytes())
    return digest.hexdigest()


def _rank(
    rank: int, world: int, port: int, options: dict, run: str, out: str, epoch_clock: bool
) -> None:
    os.environ.update(
        RANK=str(rank),
        WORLD_SIZE=str(world),
        LOCAL_RANK=str(rank),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    import torch.distributed as dist

    from streamvol.train import TrainConfig, Trainer

    config = TrainConfig(
        model="simple_cnn",
        epochs=2,
        batch_size=4,
        workers=0,
        augment="flips",
        warmup=0,
        lr=3e-3,
        device="cpu",
        **options,
    )
    try:
        trainer = Trainer(config, run)
        if epoch_clock:  # one training pass timed by a clock that reads 0 s, then 10 s on
            from streamvol.cli import _start_line
            from streamvol.train import loop

            start = _start_line(trainer)
            ticks = itertools.chain([0.0], itertools.repeat(10.0))
            loop.time = SimpleNamespace(perf_counter=lambda: next(ticks))
            values = trainer.train_epoch()
            with open(os.path.join(out, f"rank{rank}.json"), "w") as f:
                json.dump({**values, "steps": trainer.steps_per_epoch, "start": start}, f)
            dist.barrier()  # neither rank tears the group down while the other still uses it
            return
        # each epoch's weights, as this rank trained them (fit ends with rank 0's best.pt)
        digests = []
        report = trainer.fit(on_epoch=lambda values: digests.append(_digest(trainer.model)))
        with open(os.path.join(out, f"rank{rank}.json"), "w") as f:
            json.dump(
                {
                    "digests": digests,
                    "world": trainer.ranks.world_size,
                    **{k: report.get(k) for k in ("balanced_accuracy", "roc_auc", "dice")},
                    "n": report["n_samples"],
                },
                f,
            )
        dist.barrier()
    finally:
        dist.destroy_process_group()


def _spawn(options: dict, run, out, epoch_clock: bool = False) -> list[dict]:
    args = (2, _free_port(), options, str(run), str(out), epoch_clock)
    mp.spawn(_rank, args=args, nprocs=2, join=True)
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]


def test_two_ranks_train_in_step(blob_shards, tmp_path):
    """With gradients summed over 2 batches: DDP syncs them at each update (only there)."""
    out = tmp_path / "out"
    out.mkdir()
    run = tmp_path / "run"
    r0, r1 = _spawn({"shards": str(blob_shards), "accumulate": 2}, run, out)
    assert r0["world"] == r1["world"] == 2
    assert len(r0["digests"]) == 2 and r0["digests"] == r1["digests"]  # replicas identical
    assert r0["balanced_accuracy"] == r1["balanced_accuracy"]
    assert r0["n"] == 12  # validation gathered from both ranks
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 2  # written once per epoch
    state = torch.load(run / "best.pt", weights_only=True)
    assert "model" in state


def test_two_ranks_report_the_loss_and_rate_of_both(blob_shards, tmp_path):
    """An epoch's samples per second count every rank's samples (a 2-GPU run reports twice
    one GPU's rate), its loss is the mean over both ranks' samples, the same on each, and the
    start line says the batches and workers are each rank's."""
    out = tmp_path / "out"
    out.mkdir()
    r0, r1 = _spawn({"shards": str(blob_shards)}, tmp_path / "run", out, epoch_clock=True)
    steps = r0["steps"]  # each rank's batches of 4
    assert r1["steps"] == steps
    assert r0["train_samples_per_s"] == r1["train_samples_per_s"] == 2 * steps * 4 / 10.0
    assert r0["train_loss"] == r1["train_loss"]
    assert f": {steps} batches of 4 an epoch on each of 2 ranks, 2 epochs, " in r0["start"]
    assert "0 loader workers a rank, --augment flips in the loader -> " in r0["start"]


def test_two_ranks_score_segmentation_with_every_rank_s_probabilities(seg_folds, tmp_path):
    """The gathered validation keeps the per-voxel probabilities: ROC AUC is defined."""
    out = tmp_path / "out"
    out.mkdir()
    options = {"shards": str(seg_folds), "train_folds": (0, 1), "val_folds": (2,)}
    r0, r1 = _spawn(options, tmp_path / "run", out)
    assert r0["n"] == 2  # the fold's 2 crops, one from each rank
    assert r0["roc_auc"] is not None and 0 <= r0["roc_auc"] <= 1
    assert (r0["roc_auc"], r0["dice"]) == (r1["roc_auc"], r1["dice"])
