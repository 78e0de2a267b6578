"""``TrainConfig``: every choice of a training run, saved as ``config.json`` in its run folder."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

OPTIMIZERS = ("adamw", "sgd")
SCHEDULES = ("cosine", "step", "plateau", "none")
AMP = ("auto", "off", "bf16", "fp16")
DEVICES = ("auto", "cpu", "cuda")
# reconstruction: autoencoder pretraining (``streamvol pretrain``), the crop is its own target
TASKS = ("auto", "classification", "segmentation", "detection", "reconstruction")
# segmentation: how mask labels become classes (auto: 0 / 1 masks as they are, others refused)
MASK_LABELS = ("auto", "binary", "classes")
# may change when a run resumes; storage options (credentials) are never saved in config.json
OPERATIONAL = ("checkpoint_every", "loader_timeout", "storage_options")


@dataclass(frozen=True)
class TrainConfig:
    """What to train, on what, and how. ``auto`` values are resolved from the manifest."""

    shards: str
    model: str = "auto"
    model_options: dict[str, Any] | None = None
    task: str = "auto"
    mask_labels: str = "auto"
    epochs: int = 20
    batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 1e-4
    optimizer: str = "adamw"
    momentum: float = 0.9
    schedule: str = "cosine"
    warmup: int = 1
    step_size: int = 10
    gamma: float = 0.1
    clip: float | None = 1.0
    amp: str = "auto"
    ema: float | None = None
    loss: str = "auto"
    class_weights: bool = True
    target: str = "sphere"
    target_radius: float = 0.5
    target_sigma: float = 0.25
    pos_weight: float = 256.0
    focal_gamma: float = 2.0
    tversky_alpha: float = 0.3
    tversky_beta: float = 0.7
    predict_patch: tuple[int, int, int] | None = None
    predict_tta: tuple[str, ...] = ()
    peak_method: str = "nms"
    peak_distance: float = 0.5
    augment: str = "default"
    augment_device: str = "cpu"
    mixup: float = 0.0
    cutmix: float = 0.0
    early_stopping: int | None = None
    val_every: int = 1
    metric: str = "auto"
    train_split: str = "train"
    val_split: str | None = "val"
    train_folds: tuple[int, ...] | None = None
    val_folds: tuple[int, ...] | None = None
    device: str = "auto"
    workers: int = 2
    seed: int = 0
    compile: bool = False
    channels_last: bool = False
    pretrained: str | None = None
    freeze_features: bool = False
    unfreeze_every: int | None = None
    sweep_threshold: bool = True
    max_steps_per_epoch: int | None = None
    accumulate: int = 1  # batches whose gradients sum into one update
    noise: float = 0.0  # reconstruction: Gaussian noise added to the input (denoising)
    mask_ratio: float = 0.0  # reconstruction: fraction of the input's blocks blanked (inpainting)
    mask_block: int = 4  # reconstruction: side of a blanked block, voxels
    checkpoint_every: int = 0
    loader_timeout: float = 600.0
    storage_options: dict[str, Any] | None = None  # fsspec options for URL shards

    def __post_init__(self) -> None:
        """Refuse a setting outside its range, naming it as this parameter (``lr=0.0``); the CLI
        shows the same error as its flag (``--lr 0.0``)."""
        for name, allowed in (
            ("optimizer", OPTIMIZERS),
            ("schedule", SCHEDULES),
            ("amp", AMP),
            ("device", DEVICES),
            ("task", TASKS),
            ("mask_labels", MASK_LABELS),
            ("augment_device", ("cpu", "gpu")),
            ("target", ("sphere", "heatmap")),
            ("peak_method", ("nms", "cc")),
        ):
            if getattr(self, name) not in allowed:
                _bad(name, getattr(self, name), f"expected one of {', '.join(allowed)}")
        for name in ("epochs", "batch_size", "mask_block", "accumulate"):
            if getattr(self, name) < 1:
                _bad(name, getattr(self, name), "expected >= 1")
        if not self.lr > 0:
            _bad("lr", self.lr, "expected a positive learning rate")
        if self.unfreeze_every is not None and self.unfreeze_every < 1:
            _bad("unfreeze_every", self.unfreeze_every, "expected epochs >= 1")
        if self.checkpoint_every < 0:
            _bad("checkpoint_every", self.checkpoint_every, "expected steps >= 0")
        if self.checkpoint_every % self.accumulate:
            _bad(
                "checkpoint_every",
                self.checkpoint_every,
                f"expected a multiple of accumulate ({self.accumulate}): last.pt follows an update",
            )
        if self.loader_timeout < 0:
            _bad("loader_timeout", self.loader_timeout, "expected seconds >= 0")
        unknown = [t for t in self.predict_tta if t not in ("flips", "rot90")]
        if unknown:
            _bad("predict_tta", self.predict_tta, "expected flips and/or rot90")
        for name in ("target_radius", "target_sigma", "pos_weight", "peak_distance"):
            if not getattr(self, name) > 0:
                _bad(name, getattr(self, name), "expected a positive number")
        if self.early_stopping is not None and self.early_stopping < 1:
            _bad("early_stopping", self.early_stopping, "expected a patience >= 1")
        if self.val_every < 1:
            _bad("val_every", self.val_every, "expected epochs >= 1")
        if self.max_steps_per_epoch is not None and self.max_steps_per_epoch < 1:
            _bad("max_steps_per_epoch", self.max_steps_per_epoch, "expected steps >= 1")
        if not self.noise >= 0:
            _bad("noise", self.noise, "expected a standard deviation >= 0")
        if not 0 <= self.mask_ratio < 1:
            _bad("mask_ratio", self.mask_ratio, "expected a fraction in [0, 1)")
        for name in ("mixup", "cutmix"):
            if not getattr(self, name) >= 0:
                _bad(name, getattr(self, name), "expected a Beta alpha >= 0 (0: off)")
        if self.ema is not None and not 0 < self.ema < 1:
            _bad("ema", self.ema, "expected a decay in (0, 1), e.g. 0.999")

    def differences(self, other: TrainConfig) -> list[str]:
        """``name: mine -> other's`` for each option that differs, but those a resumed run may
        change: how often it checkpoints and how long its loader waits."""
        return [
            f"{f.name}: {getattr(self, f.name)!r} -> {getattr(other, f.name)!r}"
            for f in fields(self)
            if f.name not in OPERATIONAL and getattr(self, f.name) != getattr(other, f.name)
        ]

    def to_json(self) -> dict[str, Any]:
        """Everything but ``storage_options``, which may hold credentials."""
        payload = asdict(self)
        del payload["storage_options"]
        return payload

    @classmethod
    def from_json(cls, payload: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)} - {"storage_options"}
        unknown = sorted(set(payload) - known)
        if unknown:
            from streamvol.errors import RunError

            raise RunError(f"config.json: unknown keys {unknown}")
        data = dict(payload)
        for name in ("train_folds", "val_folds", "predict_patch", "predict_tta"):
            if data.get(name) is not None:
                data[name] = tuple(data[name])
        return cls(**data)

    def save(self, path: Path) -> None:
        from streamvol.core.files import write_json_atomic

        write_json_atomic(path, self.to_json())

    @classmethod
    def load(cls, path: Path) -> TrainConfig:
        """A run's ``config.json``; a missing one names the run folder and what was expected."""
        path = Path(path)
        if not path.is_file():
            from streamvol.errors import RunNotFound

            run = path.parent
            what = "no such folder" if not run.exists() else f"no {path.name} in it"
            raise RunNotFound(
                f"{run}: not a run folder ({what}); expected a folder written by "
                "`streamvol train`, such as runs/NAME"
            )
        return cls.from_json(json.loads(path.read_text()))


def _bad(name: str, value: Any, expected: str) -> None:
    from streamvol.errors import BadOption

    raise BadOption(name, value, expected)
