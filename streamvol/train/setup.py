"""What a run needs before its first step: task, classes, model, loss, optimizer, schedule,
device and the loaders, all resolved from the config and the shard set's manifest."""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from streamvol.core.heap import give_freed_memory_back
from streamvol.errors import BadInput, BadOption, MemoryWarning
from streamvol.metrics.picking import particle_weight
from streamvol.stream import StreamDataset, open_shards
from streamvol.train.config import TrainConfig
from streamvol.train.losses import (
    class_weights_from_counts,
    make_detection_loss,
    make_loss,
    make_reconstruction_loss,
)
from streamvol.train.targets import TargetSpec


@dataclass(frozen=True)
class Task:
    """The learning problem a shard set poses.

    Detection: ``class_names`` are the particle types, ``target`` says how their targets are
    drawn (radii in voxels of the stored array), ``radii_angstrom`` their radii for picks,
    ``weights`` their weights in the score (the copick config's as sharded, else the CZII
    table's, else 1).
    """

    kind: str  # "classification" | "segmentation" | "detection" | "reconstruction"
    class_names: tuple[str, ...]
    crop: tuple[int, int, int]
    counts: tuple[int, ...]  # training samples per class (classification)
    target: TargetSpec | None = None
    radii_angstrom: tuple[float, ...] = ()
    weights: tuple[float, ...] = ()  # detection: each particle's score weight
    binary_mask: bool = False  # segmentation: every mask label > 0 is class 1 (foreground)
    label_map: tuple[int, ...] | None = None  # another set's class ids as the run's classes

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def binary(self) -> bool:
        return self.kind == "classification" and self.num_classes == 2


def resolve_task(
    config: TrainConfig, manifest: dict[str, Any], run: Mapping[str, Any] | None = None
) -> Task:
    """Classification (binary or multi-class) or segmentation, with the training class counts.

    ``run``: a finished run's task (``kind``, ``class_names``, as its checkpoints keep it),
    whose model is evaluated on this set, which may be another than it trained on (unlabelled,
    or with fewer classes): the set's labels map onto the run's classes by name."""
    kind = run["kind"] if run else config.task if config.task != "auto" else manifest["task"]
    if run and kind in ("classification", "segmentation"):
        return _run_classes(config, manifest, kind, tuple(run["class_names"]))
    if kind == "detection":
        return detection_task(config, manifest)
    if kind == "reconstruction":  # autoencoder pretraining: the crop is its own target
        return Task("reconstruction", ("intensity",), tuple(manifest["crop"]), ())
    if kind == "segmentation":
        return segmentation_task(config, manifest)
    names = tuple(manifest["class_names"])
    if len(names) < 2:
        raise BadInput(f"{config.shards}: {len(names)} class(es) {names}; classification needs 2+")
    return Task("classification", names, tuple(manifest["crop"]), _counts(config, manifest, names))


def _counts(config: TrainConfig, manifest: dict[str, Any], names: tuple[str, ...]) -> tuple:
    """Training samples of each of ``names`` (the class weights' counts)."""
    counts = [0] * len(names)
    for split in _train_splits(config):
        for name, n in manifest.get("class_counts", {}).get(split, {}).items():
            if name in names:
                counts[names.index(name)] += n
    return tuple(counts)


def _run_classes(
    config: TrainConfig, manifest: dict[str, Any], kind: str, classes: tuple[str, ...]
) -> Task:
    """The task of a run with these ``classes`` on this set: its labels as the run's."""
    crop = tuple(manifest["crop"])
    if kind == "segmentation":  # mask labels are numbers: the same numbers, the run's names
        binary = config.mask_labels == "binary"
        high = (manifest.get("mask_range") or (0, None))[1]
        if not binary and high is not None and high >= len(classes):
            raise BadInput(
                f"{config.shards}: its masks hold labels up to {high}, beyond the run's "
                f"classes ({', '.join(classes)})"
            )
        return Task(kind, classes, crop, (), binary_mask=binary)
    names = tuple(manifest.get("class_names") or ())
    unknown = [n for n in names if n not in classes]
    if unknown:
        raise BadInput(
            f"{config.shards}: class {unknown[0]!r} is not one of the run's classes "
            f"({', '.join(classes)}); its model cannot score it"
        )
    index = tuple(classes.index(n) for n in names)
    same = index == tuple(range(len(names)))
    counts = _counts(config, manifest, classes)
    return Task(kind, classes, crop, counts, label_map=None if same else index)


def segmentation_task(config: TrainConfig, manifest: dict[str, Any]) -> Task:
    """The classes a segmentation run learns from the set's mask labels (``mask_range``): 0 / 1
    masks as they are; other labels only as ``mask_labels`` says (binary: > 0 is foreground;
    classes: each label its class), so instance ids never pass for classes unasked."""
    crop = tuple(manifest["crop"])
    given = (config.model_options or {}).get("class_names")
    labels = manifest.get("mask_range")  # None: a set made before it was recorded
    low, high = labels if labels else (0, None)
    where = f"{config.shards}: its masks hold labels {low} to {high}"
    if low < 0:
        raise BadInput(f"{where}; expected labels >= 0 (0: background)")
    named = tuple(manifest.get("mask_names") or ())  # the sources' names (copick segmentations)
    if config.mask_labels == "binary":
        names = named if len(named) == 2 else ("background", "foreground")
        return Task("segmentation", names, crop, (), binary_mask=True)
    if given is not None:
        names = tuple(given)
    elif config.mask_labels == "classes" and high is not None:
        count = max(high + 1, len(named), 2)
        names = (
            "background",
            *(named[k] if k < len(named) else f"label {k}" for k in range(1, count)),
        )
    else:
        names = named or ("background", "foreground")
    if high is not None and high >= len(names):
        raise BadInput(
            f"{where}, more than the classes {', '.join(names)}: instance ids, or classes? "
            "Train with --mask-labels binary to learn every label > 0 as foreground, or "
            "--mask-labels classes to learn each label as a class of its own"
            + ("" if given is None else f", or give {high + 1} class_names")
        )
    return Task("segmentation", names, crop, ())


def _train_splits(config: TrainConfig) -> list[str]:
    if config.train_folds is not None:
        return [f"fold{k}" for k in config.train_folds]
    return [config.train_split]


PER_VOXEL = ("segmentation", "detection", "reconstruction")


def default_model(task: Task) -> str:
    """simple_cnn for small crops (the 9 x 11 x 11 spot classifier's kind), se_resnet3d for
    larger ones, unet3d for masks; pretraining as classification, whose model it prepares."""
    if task.kind in ("segmentation", "detection"):
        return "unet3d"
    if max(task.crop) <= 16:
        return "simple_cnn"
    return "se_resnet3d"


def model_name(config: TrainConfig, task: Task) -> str:
    return config.model if config.model != "auto" else default_model(task)


def build_model(config: TrainConfig, task: Task) -> torch.nn.Module:
    """The run's model: built for the crop (``input_shape`` for every model that takes one),
    in its per-voxel form (``task="segment"``) for segmentation, detection and pretraining, and
    with the run's ``model_options`` over both."""
    from streamvol import models

    name = model_name(config, task)
    known = models.options(name)  # also refuses an unknown name, listing the known ones
    options = {k: v for k, v in (config.model_options or {}).items() if k != "class_names"}
    if "input_shape" in known:
        options.setdefault("input_shape", task.crop)
    per_voxel = task.kind in PER_VOXEL
    if "task" in known:
        options.setdefault("task", "segment" if per_voxel else "classify")
        if options["task"] == "segment" and not per_voxel:
            raise BadOption("model_options", "task=segment", f"a {task.kind} run classifies")
    elif not per_voxel:
        classifiers = [n for n in models.available() if "task" in models.options(n)]
        raise BadOption(
            "model",
            name,
            f"{name} gives a map per voxel, not a class per crop; classifiers: "
            f"{', '.join(classifiers)}; or --task segmentation where the set has masks",
        )
    if task.kind == "reconstruction":
        outputs = 1
    else:
        outputs = task.target.channels if task.target is not None else task.num_classes
    return models.build(name, in_channels=1, num_classes=outputs, **options)


def resolve_device(config: TrainConfig) -> torch.device:
    if config.device == "cuda" and not torch.cuda.is_available():
        raise BadOption("device", "cuda", "no CUDA device is available")
    if config.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(config.device)


# a CPU step's peak RSS over its saved activations with freed memory kept: 1.9 to 2.3 (unet3d,
# 48^3 and 64^3) and 2.4 (se_resnet3d, 48^3) measured (benchmarks/RESULTS.md, 2026-12-03)
KEPT = 2.5
GIVEN_BACK = 1.2  # the same with glibc's defaults


def activation_bytes(
    model: torch.nn.Module, crop: tuple[int, ...], half: bool = False
) -> int | None:
    """Bytes one sample's forward pass keeps for the backward pass (what autograd saves, the
    bulk of a 3D network's training memory), counted on a copy of ``model`` on the meta device:
    no memory, no arithmetic. ``half``: under bf16 / fp16 autocast. None where the model does
    not run on the meta device."""
    import copy

    saved: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        saved[id(t)] = t.numel() * t.element_size()  # the graph holds t: ids stay unique
        return t

    try:
        probe = copy.deepcopy(model).to("meta").train()
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            probe(torch.zeros(1, 1, *crop, device="meta"))
    except Exception:  # an op without a meta kernel: no estimate
        return None
    return int(sum(saved.values()) * (0.5 if half else 1.0))


def available_memory(device: torch.device) -> int | None:
    """Bytes the device can still give: free memory on CUDA, MemAvailable on Linux."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo") as f:
            fields = dict(line.split(":", 1) for line in f)
        return int(fields["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return None


def check_memory(
    config: TrainConfig,
    task: Task,
    model: torch.nn.Module,
    device: torch.device,
    half: bool,
    *,
    warn: bool = True,
    accumulates: bool = True,
) -> dict[str, Any] | None:
    """Before the first step: whether a training step fits in the device's memory (every rank
    on a CPU host shares it). On the CPU, freed memory is given back to the system where
    keeping it would not fit; where even that does not fit, a ``MemoryWarning`` (``warn``)
    names a batch size that does (and, where the caller ``accumulates``, the ``--accumulate``
    that keeps the update's size), instead of the system killing the run mid-epoch. Returns the
    figures, with ``shortfall``: that message, where it does not fit."""
    per_sample = activation_bytes(model, task.crop, half)
    available = available_memory(device)
    if not per_sample or available is None:
        return None
    ranks = int(os.environ.get("LOCAL_WORLD_SIZE", "1")) if device.type == "cpu" else 1
    need = per_sample * config.batch_size * ranks
    factor = GIVEN_BACK if device.type == "cpu" else 1.0
    gave_back = device.type == "cpu" and need * KEPT > available
    if gave_back:
        give_freed_memory_back()
    shortfall = None
    if need * factor > available:
        fits = int(available / (factor * per_sample * ranks))
        each = f" on each of {ranks} ranks" if ranks > 1 else ""
        crop = "x".join(map(str, task.crop))
        advice = f"--batch-size {fits} fits" if fits else "smaller crops are needed"
        if fits and accumulates and config.accumulate == 1:  # the update from smaller batches
            n = math.ceil(config.batch_size / fits)
            batch = math.ceil(config.batch_size / n)
            advice += f"; with --accumulate {n}, batches of {batch} make updates of {n * batch}"
        shortfall = (
            f"a training step of {model_name(config, task)} on {crop} crops "
            f"keeps about {per_sample / 2**30:.2f} GiB a sample for the backward pass: "
            f"{need * factor / 2**30:.1f} GiB at --batch-size {config.batch_size}{each}, "
            f"and {device.type} has {available / 2**30:.1f} GiB available, so the system "
            f"may stop the run; {advice}"
        )
        if warn:
            warnings.warn(MemoryWarning(shortfall), stacklevel=2)
    return {
        "per_sample": per_sample,
        "need": need,
        "available": available,
        "gave_back": gave_back,
        "shortfall": shortfall,
    }


def amp_dtype(config: TrainConfig, device: torch.device) -> torch.dtype | None:
    """bf16 autocast on a GPU by default, none on the CPU."""
    if config.amp == "off" or (config.amp == "auto" and device.type != "cuda"):
        return None
    return torch.float16 if config.amp == "fp16" else torch.bfloat16


def make_loss_fn(config: TrainConfig, task: Task) -> Any:
    name = config.loss
    if task.kind == "reconstruction":
        return make_reconstruction_loss("mse" if name == "auto" else name)
    if task.target is not None:
        if name == "auto":
            name = "ce" if task.target.kind == "sphere" else "focal"
        return make_detection_loss(
            name,
            task.target.kind,
            task.target.num_types,
            pos_weight=config.pos_weight,
            focal_gamma=config.focal_gamma,
            tversky_alpha=config.tversky_alpha,
            tversky_beta=config.tversky_beta,
        )
    if name == "auto":
        name = "ce+dice" if task.kind == "segmentation" else "ce"
    weights = None
    if config.class_weights and task.kind == "classification" and all(task.counts):
        weights = class_weights_from_counts(task.counts)
    return make_loss(
        name,
        class_weights=weights,
        focal_gamma=config.focal_gamma,
        tversky_alpha=config.tversky_alpha,
        tversky_beta=config.tversky_beta,
    )


def make_optimizer(config: TrainConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    """Over every parameter: frozen ones get no gradient and are skipped until unfrozen."""
    params = list(model.parameters())
    if config.optimizer == "sgd":
        return torch.optim.SGD(
            params,
            lr=config.lr,
            momentum=config.momentum,
            weight_decay=config.weight_decay,
            nesterov=True,
        )
    return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)


def make_schedule(
    config: TrainConfig, optimizer: torch.optim.Optimizer, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LRScheduler:
    """Per-step schedule (a step: an update, ``steps_per_epoch`` of them an epoch): linear
    warmup, then cosine / step decay / constant.

    ``plateau`` keeps the warmup per step and lowers the rate on a stalled validation metric
    (see ``Trainer``), so every schedule steps the same way.
    """
    warmup = config.warmup * steps_per_epoch
    total = max(config.epochs * steps_per_epoch, 1)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if config.schedule == "cosine":
            progress = (step - warmup) / max(total - warmup, 1)
            return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
        if config.schedule == "step":
            return config.gamma ** ((step // steps_per_epoch) // config.step_size)
        return 1.0

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def make_dataset(
    config: TrainConfig, *, train: bool, augment: Any = None, split: str | None = None
) -> StreamDataset:
    """The training stream (augmented, shuffled) or an evaluation stream (plain, in order)."""
    if train:
        return open_shards(
            config.shards,
            split=config.train_split,
            folds=config.train_folds,
            augment=augment,
            augment_device=config.augment_device,
            seed=config.seed,
            shuffle=True,
            storage_options=config.storage_options,
        )
    folds = config.val_folds if split is None else None
    return open_shards(
        config.shards,
        split=split or config.val_split or "val",
        folds=folds,
        seed=config.seed,
        shuffle=False,
        storage_options=config.storage_options,
    )


def make_augment(config: TrainConfig, manifest: Mapping[str, Any] | None = None) -> Any:
    """The run's spec, with ``--mixup`` / ``--cutmix`` alphas (when given) over the spec's own,
    on the voxels of the shard set ``manifest`` describes."""
    import dataclasses

    from streamvol.augment import Augment, Cutmix, Mixup, load_spec

    spec = load_spec(config.augment)
    if config.mixup or config.cutmix:
        spec = spec or Augment()
    if config.mixup:
        spec = dataclasses.replace(spec, mixup=Mixup(alpha=config.mixup))
    if config.cutmix:
        spec = dataclasses.replace(spec, cutmix=Cutmix(alpha=config.cutmix))
    return spec.on_voxels((manifest or {}).get("voxel_size")) if spec is not None else None


def particle_radii(shards: str, manifest: Mapping[str, Any]) -> dict[str, float]:
    """Particle radii in Angstrom from the manifest (or, for shard sets written before it
    recorded them, from the copick configs of its sources)."""
    radii = manifest.get("radii_angstrom")
    if not radii:
        from streamvol.io import discover

        radii = {}
        for source in manifest.get("config", {}).get("sources", []):
            try:
                radii.update(discover(source).radii)
            except (OSError, ValueError):
                continue
    if not radii:
        raise BadInput(
            f"{shards}: detection needs the particle radii, and the shard set records none; "
            "reshard with --radius (Angstrom: one for every type, or NAME=R,NAME=R), or from a "
            "copick project whose config gives them"
        )
    return dict(radii)


def detection_task(config: Any, manifest: Mapping[str, Any]) -> Task:
    """The detection ``Task``: particle types, their radii and how targets are drawn."""
    if "points.npy" not in manifest.get("members", []):
        raise BadInput(
            f"{config.shards}: detection trains on picks, but the shards carry no points.npy; "
            "shard a copick project (e.g. --plan points)"
        )
    names = list(manifest["class_names"])
    radii = particle_radii(config.shards, manifest)
    particles = [n for n in names if n in radii]
    unknown = [n for n in names if n not in radii and n != "background"]
    if unknown or not particles:
        raise BadInput(
            f"{config.shards}: classes {unknown or names} have no particle radius; expected "
            f"every class but 'background' in the copick config's {sorted(radii)}"
        )
    offset = names.index(particles[0])
    if names[offset : offset + len(particles)] != particles:
        raise BadInput(f"{config.shards}: particle classes are not contiguous in {names}")
    voxels = manifest.get("radii_voxels")
    if not voxels:
        size = manifest.get("voxel_size")
        if not size:
            raise BadInput(
                f"{config.shards}: no common voxel size to turn particle radii into voxels; "
                "reshard with --voxel-size"
            )
        voxels = {n: r / float(np.mean(size)) for n, r in radii.items()}
    size = manifest.get("voxel_size")
    round_voxels = not size or len(set(size)) == 1
    spec = TargetSpec(
        kind=config.target,
        radii=tuple(float(voxels[n]) for n in particles),
        scale=config.target_radius,
        sigma_scale=config.target_sigma,
        point_offset=offset,
        # anisotropic voxels: balls and Gaussians round in space
        spacing=(1.0,) * 3 if round_voxels else tuple(s / float(np.mean(size)) for s in size),
    )
    for name in ("mixup", "cutmix"):
        if getattr(config, name):
            raise BadOption(
                name,
                getattr(config, name),
                "mixup and cutmix blend images but not picks; detection takes neither",
            )
    return Task(
        "detection",
        tuple(particles),
        tuple(manifest["crop"]),
        (),
        target=spec,
        radii_angstrom=tuple(float(radii[n]) for n in particles),
        weights=tuple(particle_weight(n, manifest.get("particle_weights")) for n in particles),
    )
