"""Autoencoder pretraining: a model's encoder, under a decoder, learns to reconstruct unlabeled
crops (``streamvol pretrain``), so that ``train --pretrained`` starts from its features.

The model is the per-voxel form of the one to fine-tune (``task="segment"``, one output
channel; ``unet3d`` as it is), trained by the same ``Trainer`` loop on the task
``reconstruction``: the target is the normalised, augmented crop; the input is that crop,
corrupted when asked: Gaussian noise of standard deviation ``noise`` (denoising) and, with
``mask_ratio``, that fraction of the ``mask_block``-voxel blocks blanked to 0, the data set's
mean (inpainting). The loss (``mse`` or ``l1``) is over every voxel. Corruptions are drawn
from ``(seed, epoch, step)``, so a resumed run draws the same; validation draws from a fixed key,
so its loss compares across epochs. Metric: R^2 of the reconstruction against the clean crop
(1 - SSE / SST over every voxel of the split; 0 is the split's mean, 1 exact).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from streamvol.core.files import write_json_atomic
from streamvol.train.common import counted, identity, plot_curves

PREVIEW = "val_reconstruction.png"
_VAL_KEY = 0x5EC0  # validation corruptions: the same every epoch


def fold_splits(config: Any) -> Any:
    """``config`` for a shard set of folds (``--folds K``, no ``train`` split): pretraining
    learns from every fold but the last and validates on the last. No labels are read, so the
    folds a later ``cv`` validates on may serve here (self-supervised use of every crop). A set
    with a ``train`` split, or folds already chosen, is returned as it is."""
    from dataclasses import replace

    from streamvol.core.manifest import read_manifest

    if config.train_folds is not None:
        return config
    splits = list(read_manifest(config.shards, config.storage_options)["splits"])
    folds = sorted(int(s[4:]) for s in splits if s.startswith("fold") and s[4:].isdigit())
    if config.train_split in splits or len(folds) < 2:
        return config
    return replace(config, train_folds=tuple(folds[:-1]), val_folds=(folds[-1],), val_split=None)


def corrupt(
    x: torch.Tensor,
    *,
    noise: float,
    mask_ratio: float,
    mask_block: int,
    rng: np.random.Generator,
) -> torch.Tensor:
    """``x`` (B, C, D, H, W) with Gaussian noise of std ``noise`` and a fraction ``mask_ratio``
    of its ``mask_block``-sided blocks set to 0; ``x`` itself when both are 0. Draws come
    from ``rng`` (on the CPU, then moved to ``x``'s device), so they do not depend on it."""
    if not noise and not mask_ratio:
        return x
    g = torch.Generator().manual_seed(int(rng.integers(2**63 - 1)))
    out = x
    if noise:
        out = out + noise * torch.randn(x.shape, generator=g).to(x.device, x.dtype)
    if mask_ratio:
        b = mask_block
        grid = [-(-s // b) for s in x.shape[2:]]
        keep = torch.rand((x.shape[0], 1, *grid), generator=g) >= mask_ratio
        for dim in (2, 3, 4):
            keep = keep.repeat_interleave(b, dim=dim)
        keep = keep[:, :, : x.shape[2], : x.shape[3], : x.shape[4]].to(x.device)
        out = out * keep.to(out.dtype)
    return out


def inputs(trainer: Any, batch: dict[str, Any], rng: np.random.Generator) -> tuple[Any, Any]:
    """The corrupted crops (input) and the clean ones (target) of a training batch."""
    c = trainer.config
    x = batch["image"]
    return corrupt(x, noise=c.noise, mask_ratio=c.mask_ratio, mask_block=c.mask_block, rng=rng), x


@torch.no_grad()
def reconstruct(
    trainer: Any,
    split: str | None = None,
    *,
    keep: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Loss and R^2 over an evaluation split (None: validation), summed over ranks; with
    ``keep``, the first ``keep`` samples' corrupted input, reconstruction and clean crop."""
    from streamvol.train import distributed, setup

    config = trainer.config
    ds = setup.make_dataset(config, train=False, split=split)
    dl = trainer.eval_loader(ds)
    net = trainer.ema.model if trainer.ema else trainer.model
    net.eval()
    sums = np.zeros(5)  # loss * w, w, sse, sum y, sum y^2 (voxels of real samples)
    voxels = 0.0
    kept: dict[str, list[np.ndarray]] = {"input": [], "output": [], "target": []}
    with dl:  # its workers stop here, also when the pass is stopped
        for step, batch in enumerate(counted(trainer._batches(dl), len(dl), progress)):
            rng = np.random.default_rng([config.seed, _VAL_KEY, step])
            x, y = inputs(trainer, batch, rng)
            out = trainer._forward(net, x).float()
            w = batch["weight"].to(out.dtype)
            real = float(w.sum())
            sums[0] += float(trainer.loss_fn(out, y, batch["weight"])) * real
            sums[1] += real
            wv = w.view(-1, *[1] * (y.ndim - 1))
            sums[2] += float(((out - y) ** 2 * wv).sum())
            sums[3] += float((y * wv).sum())
            sums[4] += float((y**2 * wv).sum())
            voxels += real * float(np.prod(y.shape[1:]))
            for name, t in (("input", x), ("output", out), ("target", y)):
                if sum(len(a) for a in kept[name]) < keep:
                    kept[name].append(t[w > 0].cpu().numpy())
    total = distributed.sum_all(trainer.ranks, *sums, voxels)
    loss_sum, weight, sse, sy, syy, n = total
    sst = syy - sy**2 / max(n, 1.0)
    result: dict[str, Any] = {
        "loss": loss_sum / max(weight, 1.0),
        "r2": 1.0 - sse / sst if sst > 0 else None,
        "n_samples": int(weight),
    }
    if keep:
        result["preview"] = {k: np.concatenate(v)[:keep] for k, v in kept.items() if v}
    return result


def validate(trainer: Any, progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    out = reconstruct(trainer, progress=progress)
    values = {"val_loss": out["loss"]}
    if out["r2"] is not None:
        values["val_r2"] = out["r2"]
    return values


def write_report(
    trainer: Any,
    *,
    split: str | None,
    prefix: str,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Loss and R^2 of the best weights on ``split`` (None: validation), the loss curves and a
    preview of a few reconstructions (the middle z slice of input, output and clean crop)."""
    from streamvol.metrics import plot_reconstructions

    run = Path(trainer.run_dir)
    writes = getattr(trainer, "main", True)
    config = trainer.config
    report: dict[str, Any] = {
        "task": "reconstruction",
        "split": split or "val",
        **identity(trainer),
    }
    plots: dict[str, str] = {}
    if trainer.history and split is None and writes:
        plots["curves"] = str(plot_curves(trainer.history, run))
    if split is None and not config.val_split and config.val_folds is None:
        report["note"] = "no validation split"
        report["plots"] = plots
        return report
    out = reconstruct(trainer, split, keep=4, progress=progress)
    report.update(loss=out["loss"], r2=out["r2"], n_samples=out["n_samples"])
    report["corruption"] = {
        "noise": trainer.config.noise,
        "mask_ratio": trainer.config.mask_ratio,
        "mask_block": trainer.config.mask_block,
    }
    if not writes:
        return report
    if "preview" in out:
        path = run / (PREVIEW if split is None else f"{prefix}_reconstruction.png")
        p = out["preview"]
        plots["reconstruction"] = str(
            plot_reconstructions(
                p["input"],
                p["output"],
                p["target"],
                path,
                title=f"{run.name}: {report['split']} crops, middle z slice",
            )
        )
    report["plots"] = plots
    write_json_atomic(run / f"{prefix}_report.json", report)
    return report
