"""Under a real torch.distributed process group (gloo, 2 processes) the loader takes rank and
world size from it; every rank yields the same number of batches; samples are read once."""

from __future__ import annotations

import json
import os

import numpy as np
import torch.multiprocessing as mp

from streamvol.shard import parse_config, read_manifest, shard


def _worker(rank: int, world: int, folder: str, init: str, out: str) -> None:
    import torch.distributed as dist

    import streamvol

    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        ds = streamvol.open_shards(folder, seed=5)
        dl = streamvol.loader(ds, batch_size=3, num_workers=1, persistent_workers=False)
        batches = [(b["__key__"], b["weight"].tolist()) for b in dl]
        with open(os.path.join(out, f"rank{rank}.json"), "w") as f:
            json.dump({"rank": ds.rank, "world": ds.world_size, "batches": batches}, f)
        dist.barrier()  # neither rank tears the group down while the other still uses it
    finally:
        dist.destroy_process_group()


def test_ranks_from_torch_distributed(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        np.save(src / f"v{i}.npy", rng.normal(size=(4, 8, 12)).astype(np.float32))
    folder = tmp_path / "shards"
    shard(parse_config([src], crop=4, context=0, split="1", shard_size=5), folder)  # 18 samples
    out = tmp_path / "out"
    out.mkdir()
    init = f"file://{tmp_path / 'rendezvous'}"
    mp.spawn(_worker, args=(2, str(folder), init, str(out)), nprocs=2, join=True)
    results = [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]
    assert [r["rank"] for r in results] == [0, 1]
    assert all(r["world"] == 2 for r in results)
    assert len(results[0]["batches"]) == len(results[1]["batches"])
    real = [
        k
        for r in results
        for keys, weights in r["batches"]
        for k, w in zip(keys, weights, strict=True)
        if w
    ]
    expected = [k for rec in read_manifest(folder)["splits"]["train"] for k in rec["keys"]]
    assert sorted(real) == sorted(expected)
