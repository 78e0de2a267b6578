"""Training under a real 2-process gloo group, as torchrun starts it: the ranks stay in step,
end with the same weights, and rank 0 alone writes the run folder."""

from __future__ import annotations

import hashlib
import json
import os
import socket

import torch
import torch.multiprocessing as mp


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank(rank: int, world: int, port: int, shards: str, run: str, out: str) -> None:
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
        shards=shards,
        model="simple_cnn",
        epochs=2,
        batch_size=4,
        workers=0,
        augment="flips",
        warmup=0,
        lr=3e-3,
        device="cpu",
    )
    try:
        trainer = Trainer(config, run)
        report = trainer.fit()
        digest = hashlib.sha256()
        for value in trainer.model.state_dict().values():
            digest.update(value.numpy().tobytes())
        with open(os.path.join(out, f"rank{rank}.json"), "w") as f:
            json.dump(
                {
                    "digest": digest.hexdigest(),
                    "ba": report["balanced_accuracy"],
                    "world": trainer.ranks.world_size,
                    "n": report["n_samples"],
                },
                f,
            )
    finally:
        dist.destroy_process_group()


def test_two_ranks_train_in_step(blob_shards, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    run = tmp_path / "run"
    mp.spawn(
        _rank, args=(2, _free_port(), str(blob_shards), str(run), str(out)), nprocs=2, join=True
    )
    r0, r1 = (json.loads((out / f"rank{r}.json").read_text()) for r in range(2))
    assert r0["world"] == r1["world"] == 2
    assert r0["digest"] == r1["digest"]  # DDP kept the replicas identical
    assert r0["ba"] == r1["ba"] and r0["n"] == 12  # validation gathered from both ranks
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 2  # written once per epoch
    state = torch.load(run / "best.pt", weights_only=True)
    assert "model" in state
