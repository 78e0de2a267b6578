"""The training loop: fresh augmentation every epoch, weighted losses that ignore padding,
AMP on a GPU, EMA, best and last checkpoints written atomically, exact resume.

A run folder ``runs/<name>/`` holds ``config.json``, ``shards_manifest.json`` (the manifest of
the shard set it trained on: crop, voxel size, intensity statistics, sources, so that its model
predicts new volumes without the set), ``metrics.jsonl`` (one line per epoch), ``best.pt``,
``last.pt``, ``report.json`` and PNG plots.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from streamvol.core.files import write_json_atomic
from streamvol.core.heap import keep_freed_memory
from streamvol.core.interrupt import deferred
from streamvol.core.lock import folder_lock
from streamvol.core.manifest import read_manifest
from streamvol.errors import RunError
from streamvol.stream import DevicePrefetcher, StreamDataset, StreamLoader, loader
from streamvol.train import distributed, setup
from streamvol.train.checkpoint import load_checkpoint, save_checkpoint
from streamvol.train.common import counted
from streamvol.train.config import TrainConfig
from streamvol.train.ema import EMA
from streamvol.train.rng import RunRng


@dataclass
class _Finished:
    """Where the epoch stood after its last finished step: the running sums, the seconds spent
    training, and what a step's forward pass moves before the update (the run's random state,
    the model's buffers, such as batch-norm statistics), to undo a step that was stopped."""

    first: int  # the step this pass began at
    sums: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    rng: dict[str, Any] = field(default_factory=dict)
    buffers: list[torch.Tensor] = field(default_factory=list)

    def keep(self, trainer: Trainer, sums: dict[str, float], seconds: float) -> None:
        """Record the step just finished."""
        self.sums, self.seconds = dict(sums), seconds
        self.rng = trainer.rng.state_dict()
        live = list(trainer.model.buffers())
        if not self.buffers:
            self.buffers = [b.detach().clone() for b in live]
        elif live:
            torch._foreach_copy_(self.buffers, live)

    def undo(self, trainer: Trainer) -> None:
        """Put back what the step under way moved since the last ``keep``."""
        live = list(trainer.model.buffers())
        if live:
            torch._foreach_copy_(live, self.buffers)
        trainer.rng.load_state_dict(self.rng)


@dataclass
class EpochLog:
    """What the loop reports after each epoch (also the lines of ``metrics.jsonl``)."""

    values: dict[str, Any] = field(default_factory=dict)


def _mix(
    batch: dict[str, Any], augment: Any, task: Any, rng: np.random.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """The batch's images and targets after the spec's MixUp / CutMix (soft targets where
    two samples blend), or unchanged when the spec mixes nothing."""
    segmentation = task.kind == "segmentation"
    target = batch["mask"] if segmentation else batch["label"]
    if augment is None or (augment.mixup.alpha <= 0 and augment.cutmix.alpha <= 0):
        return batch["image"], target
    from streamvol.augment import mix_batch

    mixed = mix_batch(augment, batch["image"], rng, batch.get("mask"))
    perm, lam = mixed["perm"], mixed["lam"]
    if segmentation and mixed["mask"] is not target:  # cutmix: the boxes carry their labels
        return mixed["image"], mixed["mask"]
    if task.binary:
        soft = lam * target.float() + (1 - lam) * target[perm].float()
        return mixed["image"], soft
    hot = torch.nn.functional.one_hot(target.long(), task.num_classes).movedim(-1, 1).float()
    shape = (-1,) + (1,) * (hot.ndim - 1)
    soft = lam.view(shape) * hot + (1 - lam.view(shape)) * hot[perm]
    return mixed["image"], soft


def _lower_loss(values: dict[str, Any], earlier: list[dict[str, Any]]) -> bool:
    """Whether ``values`` has a lower validation loss than the latest epoch marked best."""
    best = next((h for h in reversed(earlier) if h.get("best")), {})
    return values.get("val_loss", math.inf) < best.get("val_loss", math.inf)


RUN_MANIFEST = "shards_manifest.json"  # the run's copy of its shard set's manifest


def _mapped(labels: torch.Tensor, to_run: torch.Tensor) -> torch.Tensor:
    """Class ids through ``to_run``; -1 (no class) stays -1."""
    return torch.where(labels >= 0, to_run[labels.clamp(min=0)], labels)


class Trainer:
    """Train ``config`` into ``run_dir``; ``fit()`` returns the final report."""

    def __init__(self, config: TrainConfig, run_dir: str | Path, *, resume: bool = False) -> None:
        self._base(config, run_dir)
        self.trains = True
        self.augment = setup.make_augment(config, self.manifest)
        self._check_margin()
        self.memory = setup.check_memory(config, self.task, self.model, self.device, bool(self.amp))
        self._transfer()  # before the run folder is claimed: a bad checkpoint writes nothing
        self.train_set = setup.make_dataset(config, train=True, augment=self.augment)
        self._claim(resume)
        self.step_model = self.model
        self.ddp: torch.nn.parallel.DistributedDataParallel | None = None
        if self.ranks.distributed:
            ids = [self.ranks.local_rank] if self.device.type == "cuda" else None
            self.ddp = torch.nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
            self.step_model = self.ddp
        if config.compile:
            self.step_model = torch.compile(self.step_model)
        self.train_loader = loader(
            self.train_set, config.batch_size, config.workers, timeout=config.loader_timeout
        )
        steps = len(self.train_loader)
        if config.max_steps_per_epoch:
            steps = min(steps, config.max_steps_per_epoch)
        self.steps_per_epoch = max(steps, 1)
        self.optimizer = setup.make_optimizer(config, self.model)
        updates = math.ceil(self.steps_per_epoch / config.accumulate)
        self.schedule = setup.make_schedule(config, self.optimizer, updates)
        self.plateau = (
            torch.optim.lr_scheduler.ReduceLROnPlateau(self.optimizer, mode="max", patience=2)
            if config.schedule == "plateau"
            else None
        )
        self.scaler = torch.amp.GradScaler(enabled=self.amp == torch.float16)
        self.ema = EMA(self.model, config.ema) if config.ema else None
        self.metric = self._metric_name()
        self.epoch = 0
        self.partial: dict[str, float] | None = None  # the epoch in progress, when resumed
        self.finished: _Finished | None = None  # its last finished step, while it trains
        self.best: float | None = None
        self.stale = 0
        if resume and (self.run_dir / "last.pt").is_file():
            self._restore(load_checkpoint(self.run_dir / "last.pt", self.device))

    def _base(
        self,
        config: TrainConfig,
        run_dir: str | Path,
        run: dict[str, Any] | None = None,
        manifest: dict[str, Any] | None = None,
    ) -> None:
        """What training and evaluation share: manifest, task, device, model, loss (``run``: a
        finished run's task, which its model predicts whatever set it reads; ``manifest``: the
        run's copy, instead of reading the shard set's)."""
        self.config = config
        self.run_dir = Path(run_dir)
        self.manifest = manifest or read_manifest(config.shards, config.storage_options)
        self.task = setup.resolve_task(config, self.manifest, run)
        self.device = setup.resolve_device(config)
        if self.device.type == "cpu":
            keep_freed_memory("steps")
        self.ranks = distributed.init(self.device.type)
        self.main = self.ranks.main  # rank 0 alone writes the run folder
        if self.device.type == "cuda" and self.ranks.distributed:
            self.device = torch.device("cuda", self.ranks.local_rank)
        self.amp = setup.amp_dtype(config, self.device)
        self.rng = RunRng(config.seed, self.device)
        with self.rng.active():  # the initial weights are a function of the seed
            self.model = setup.build_model(config, self.task).to(self.device)
        if config.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last_3d)
        self.loss_fn = setup.make_loss_fn(config, self.task)
        self.ema = None
        self.history = []
        self.trains = False  # a training run, not a finished run's evaluation (eval_loader)

    @classmethod
    def for_evaluation(
        cls, config: TrainConfig, run_dir: str | Path, manifest: dict[str, Any] | None = None
    ) -> Trainer:
        """A trainer holding a finished run's best weights, for evaluation and prediction
        (``manifest``: the shard set's as the run kept it, where its shards are not read)."""
        trainer = cls.__new__(cls)
        best = load_checkpoint(Path(run_dir) / "best.pt")
        trainer._base(config, run_dir, best.get("task"), manifest)
        trainer.model.load_state_dict(best["model"])
        if best.get("ema"):
            trainer.ema = EMA(trainer.model, best["ema"]["decay"])
            trainer.ema.load_state_dict(best["ema"])
        trainer.history = json.loads(best["history"])
        return trainer

    # --- setup ---------------------------------------------------------------------------

    def _check_margin(self) -> None:
        if self.augment is None:
            return
        have = tuple(self.manifest["margin"])
        need = self.augment.margin_shortfall(self.task.crop, have)
        if need:
            raise RunError(
                f"{self.config.shards}: shards keep a margin of {have} voxels but augment "
                f"{self.config.augment!r} needs {need}; reshard with --context auto (or a larger "
                "--context), or choose --augment flips"
            )

    def _transfer(self) -> None:
        """Fine-tuning: start from pretrained weights (a classifier's, a segmenter's or an
        autoencoder's from ``streamvol pretrain``: every tensor of the same name and shape but
        the output layer, which stays this run's own, new one), then freeze the feature
        levels when asked. ``self.transferred`` says what was loaded."""
        from streamvol import models
        from streamvol.errors import BadOption

        self.transferred: dict[str, Any] | None = None
        name = setup.model_name(self.config, self.task)
        if self.config.pretrained:
            result = models.load_weights(
                self.model,
                self.config.pretrained,
                strict=False,
                skip_head=True,
                skip_mismatched=True,
            )
            total = len(self.model.state_dict())
            new = len(result.missing_keys) + len(result.mismatched_keys)
            self.transferred = {
                "from": str(self.config.pretrained),
                "loaded": total - new,
                "total": total,
                "new": sorted({k.split(".")[0] for k in result.missing_keys}),
                "mismatched": list(result.mismatched_keys),
            }
            if total - new == 0:
                raise BadOption(
                    "pretrained",
                    str(self.config.pretrained),
                    f"no tensor of it fits this {name} model (another model?)",
                )
        if self.config.freeze_features or self.config.unfreeze_every:
            if not models.feature_levels(self.model):
                option = "freeze_features" if self.config.freeze_features else "unfreeze_every"
                raise BadOption(
                    option,
                    getattr(self.config, option),
                    f"{name} has no feature levels to freeze (simple_cnn, "
                    "se_resnet3d, vgg3d and resnet3d have)",
                )
            models.freeze_features(self.model)

    def _claim(self, resume: bool) -> None:
        config_path = self.run_dir / "config.json"
        if config_path.is_file():
            previous = TrainConfig.load(config_path)
            if not resume:
                raise RunError(
                    f"{self.run_dir}: a run already lives here; pass --resume to continue it "
                    "or choose another --name"
                )
            changed = previous.differences(self.config)
            if changed:
                raise RunError(
                    f"{self.run_dir}: --resume with a different configuration "
                    f"({'; '.join(changed)}); resume with the run's options ({config_path}), "
                    f"or train a new run from its weights: --name NEW --pretrained "
                    f"{self.run_dir / 'best.pt'}"
                )
        distributed.barrier(self.ranks)  # every rank has checked before rank 0 writes
        if self.main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self.config.save(config_path)
            if not (self.run_dir / RUN_MANIFEST).is_file():  # a resumed run keeps its first
                write_json_atomic(self.run_dir / RUN_MANIFEST, self.manifest)
        distributed.barrier(self.ranks)

    def _metric_name(self) -> str:
        if self.config.metric != "auto":
            return self.config.metric
        return {"segmentation": "dice", "detection": "czii", "reconstruction": "r2"}.get(
            self.task.kind, "balanced_accuracy"
        )

    # --- state ---------------------------------------------------------------------------

    def _state(self, partial: dict[str, float] | None = None) -> dict[str, Any]:
        """Everything a resumed run needs to continue bit for bit; ``partial`` (mid-epoch):
        steps done in the epoch and its running sums, which ``loader`` then matches."""
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.state_dict(),
            "plateau": self.plateau.state_dict() if self.plateau else None,
            "scaler": self.scaler.state_dict(),
            "ema": self.ema.state_dict() if self.ema else None,
            "loader": self.train_loader.state_dict(
                None if partial is None else int(partial["pass_steps"])
            ),
            "partial": None if partial is None else {k: v for k, v in partial.items()},
            "epoch": self.epoch,
            "best": self.best,
            "stale": self.stale,
            "history": json.dumps(self.history),
            **self.rng.state_dict(),
            "task": {"kind": self.task.kind, "class_names": list(self.task.class_names)},
        }

    def _restore(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        if self.plateau and state["plateau"]:
            self.plateau.load_state_dict(state["plateau"])
        self.scaler.load_state_dict(state["scaler"])
        if self.ema and state["ema"]:
            self.ema.load_state_dict(state["ema"])
        self.train_loader.load_state_dict(state["loader"])  # other ranks: from its batches
        self.epoch = int(state["epoch"])
        self.partial = state.get("partial")
        if self.partial is not None and not self.main:  # rank 0 holds the epoch's sums
            self.partial = {**self.partial, "total": 0.0, "weight_sum": 0.0, "seen": 0}
        self.best = state["best"]
        self.stale = int(state["stale"])
        self.history = json.loads(state["history"])
        self.rng.load_state_dict(state)

    # --- steps ---------------------------------------------------------------------------

    def _inputs(
        self, batch: dict[str, Any], rng: np.random.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The batch's images and targets: detection targets drawn from its augmented points,
        else labels or masks after the spec's MixUp / CutMix."""
        if self.task.kind == "detection":
            from streamvol.train.detection import batch_targets

            return batch["image"], batch_targets(self.task.target, batch)
        if self.task.kind == "reconstruction":
            from streamvol.train import pretrain

            return pretrain.inputs(self, batch, rng)
        return _mix(batch, self.augment, self.task, rng)

    def _forward(self, model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
        if self.config.channels_last:
            x = x.contiguous(memory_format=torch.channels_last_3d)
        ctx = (
            torch.autocast(self.device.type, dtype=self.amp)
            if self.amp is not None
            else contextlib.nullcontext()
        )
        with ctx:
            return model(x)

    def _batches(self, batches: Any) -> Iterator[dict[str, Any]]:
        """Batches on the device, GPU-augmented there when they carry parameters, their masks
        made foreground / background for a ``binary_mask`` task, their labels the run's
        classes where another set numbers them otherwise."""
        on_device = iter(DevicePrefetcher(batches, self.device))
        if self.task.label_map:
            to_run = torch.tensor(self.task.label_map, device=self.device)
            return ({**b, "label": _mapped(b["label"], to_run)} for b in on_device)
        if not self.task.binary_mask:
            return on_device
        return ({**b, "mask": (b["mask"] > 0).to(b["mask"].dtype)} for b in on_device)

    def train_epoch(self, progress: Callable[[int, int], None] | None = None) -> dict[str, float]:
        """One pass over the training split (or the rest of it, when resumed mid-epoch);
        returns mean loss and samples per second. With ``checkpoint_every``, ``last.pt`` is
        written every that many steps, from which ``--resume`` continues bit for bit."""
        with self.rng.active():  # dropout draws from the run's state
            return self._train_epoch(progress)

    def _train_epoch(self, progress: Callable[[int, int], None] | None) -> dict[str, float]:
        self.model.train()
        self.train_loader.set_epoch(self.epoch)
        levels = self._trainable_levels()
        sums = {"step": 0, "total": 0.0, "weight_sum": 0.0, "seen": 0, "seconds": 0.0}
        sums.update(self.partial or {})
        self.partial = None
        first = int(sums["step"])
        started = time.perf_counter() - sums["seconds"]
        self.finished = _Finished(first)
        self.finished.keep(self, sums, sums["seconds"])
        every = self.config.checkpoint_every
        if progress:
            progress(first, self.steps_per_epoch)
        # resumed after the epoch's last step (stopped while validating): nothing to train
        batches = self._batches(self.train_loader) if first < self.steps_per_epoch else ()
        accumulate = self.config.accumulate
        for step, batch in enumerate(batches, start=first):
            if step >= self.steps_per_epoch:
                break
            # an update after every ``accumulate`` batches from the epoch's start (a resumed
            # epoch starts after an update, so it groups them alike) and after its last batch;
            # each batch's loss counts 1/group in its group's update
            start = step - step % accumulate
            group = min(accumulate, self.steps_per_epoch - start)
            update = step + 1 == start + group
            # MixUp / CutMix draws keyed by the step, so a resumed epoch draws the same
            rng = np.random.default_rng([self.config.seed, self.epoch, step, 0x4D1C])
            w = batch["weight"]
            x, target = self._inputs(batch, rng)
            if step == start:
                self.optimizer.zero_grad(set_to_none=True)
            # DDP averages the gradients over the ranks once a group, at its update
            sync = self.ddp.no_sync() if self.ddp and not update else contextlib.nullcontext()
            with sync:
                logits = self._forward(self.step_model, x)
                loss = self.loss_fn(logits.float(), target, w)
                real = float(w.sum())
                # Ctrl-C or SIGTERM waits until the update is whole (and, as it cannot stop the
                # backward pass, which runs in C++, keeps the step that pass ends)
                with deferred():
                    self.scaler.scale(loss / group).backward()
                    sums["total"] += float(loss.detach()) * real
                    sums["weight_sum"] += real
                    sums["seen"] += len(w)
                    sums["step"] = step + 1
                    if update:
                        self._update()
                        self.finished.keep(self, sums, time.perf_counter() - started)
            if every and (step + 1) % every == 0 and step + 1 < self.steps_per_epoch:
                self._checkpoint_mid_epoch(sums, first, self.finished.seconds)
            if progress:
                progress(step + 1, self.steps_per_epoch)
        seconds = time.perf_counter() - started
        # over all ranks (rank 0 alone holds what a resumed epoch had done before)
        total, weight_sum, seen = distributed.sum_all(
            self.ranks, sums["total"], sums["weight_sum"], float(sums["seen"])
        )
        return {
            "train_loss": total / max(weight_sum, 1.0),
            "lr": self.optimizer.param_groups[0]["lr"],
            "train_samples_per_s": seen / max(seconds, 1e-9),
            **levels,
        }

    def _update(self) -> None:
        """The optimizer step on the gradients summed since the last; the schedule counts
        updates, as a run of batches ``accumulate`` times as large would."""
        if self.config.clip:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.schedule.step()
        if self.ema:
            self.ema.update(self.model)

    def _trainable_levels(self) -> dict[str, int]:
        """With ``freeze_features`` or ``unfreeze_every``: this epoch's trainable feature levels
        (the deepest ones; the schedule depends on the epoch alone) and how many there are."""
        from streamvol.models import feature_levels, unfreeze_schedule

        if self.config.unfreeze_every:
            n = unfreeze_schedule(self.model, self.epoch, self.config.unfreeze_every)
        elif self.config.freeze_features:
            n = 0
        else:
            return {}
        return {"trainable_levels": n, "feature_levels": feature_levels(self.model)}

    def _checkpoint_mid_epoch(self, sums: dict[str, float], first: int, seconds: float) -> None:
        """``last.pt`` after ``sums["step"]`` steps of this epoch (``seconds`` of training); the
        running sums are summed over ranks (rank 0 keeps them when resumed, the others start
        from 0)."""
        total, weight_sum, seen = distributed.sum_all(
            self.ranks, sums["total"], sums["weight_sum"], float(sums["seen"])
        )
        partial = {
            "step": int(sums["step"]),
            "pass_steps": int(sums["step"]) - first,
            "total": total,
            "weight_sum": weight_sum,
            "seen": int(seen),
            "seconds": seconds,
        }
        if self.main:
            save_checkpoint(self.run_dir / "last.pt", self._state(partial))
        distributed.barrier(self.ranks)

    def eval_loader(self, ds: StreamDataset) -> StreamLoader:
        """A loader for an evaluation pass over ``ds``. A training run on the CPU makes these
        samples itself, without workers: each pass's workers would be forked from the trainer,
        and a fork write-protects every page of its heap (the gigabytes it keeps for its steps),
        which the next steps then fault in again one page at a time. (Its validation batches are
        then the same in a resumed run.) A finished run's evaluation forks them, before its
        heap grows."""
        config = self.config
        workers = 0 if self.device.type == "cpu" and self.trains else config.workers
        return loader(ds, config.batch_size, workers, timeout=config.loader_timeout)

    @torch.no_grad()
    def predict(
        self,
        split: str | None = None,
        *,
        tta: str | bool | None = None,
        model: Any = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> dict[str, Any]:
        """Scores (probabilities), targets, weights and keys over an evaluation split;
        ``progress(done, total)`` after each batch."""
        from streamvol.train.evaluation import predict_batches

        ds = setup.make_dataset(self.config, train=False, split=split)
        net = model or (self.ema.model if self.ema else self.model)
        with self.eval_loader(ds) as dl:
            batches = counted(self._batches(dl), len(dl), progress)
            out = predict_batches(
                net, batches, self.task, forward=self._forward, tta=tta, loss_fn=self.loss_fn
            )
        return distributed.gather_predictions(self.ranks, out)

    def validate(self, progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
        from streamvol.train.evaluation import score

        if not self.config.val_split and self.config.val_folds is None:
            return {}
        if self.task.kind == "detection":
            from streamvol.train.detection import validate

            return validate(self, progress=progress)
        if self.task.kind == "reconstruction":
            from streamvol.train import pretrain

            return pretrain.validate(self, progress=progress)
        out = self.predict(progress=progress)
        report = score(out, self.task, threshold=0.5)
        values = {"val_loss": out["loss"]}
        for key in ("accuracy", "balanced_accuracy", "f1", "roc_auc", "dice", "iou"):
            if report.get(key) is not None:
                values[f"val_{key}"] = report[key]
        return values

    # --- the run -------------------------------------------------------------------------

    def fit(
        self,
        *,
        stop_after: int | None = None,
        on_epoch: Callable[[dict[str, Any]], None] | None = None,
        progress: Callable[[int, int], None] | None = None,
        val_progress: Callable[[int, int], None] | None = None,
        on_start: Callable[[], None] | None = None,
    ) -> dict[str, Any]:
        """Train until ``config.epochs`` (or early stopping); ``stop_after`` ends this call after
        that many epochs, as a job with a time limit would (``--resume`` continues exactly).
        ``progress(done, total)`` follows each epoch's training batches, ``val_progress`` its
        validation batches (and the final validation pass). The run folder is locked while it
        runs (rank 0 writes it): a second ``train --resume`` of the run is refused, naming the
        first. ``on_start()`` is called once the folder is held, before the first batch."""
        hold = (
            folder_lock(self.run_dir, writer="streamvol train", instead="choose another --name")
            if self.main
            else contextlib.nullcontext()
        )
        with hold:
            if on_start:
                on_start()
            return self._fit(stop_after, on_epoch, progress, val_progress)

    def _fit(
        self,
        stop_after: int | None,
        on_epoch: Callable[[dict[str, Any]], None] | None,
        progress: Callable[[int, int], None] | None,
        val_progress: Callable[[int, int], None] | None,
    ) -> dict[str, Any]:
        done_now = 0
        while self.epoch < self.config.epochs:
            started = time.perf_counter()
            try:
                values = {"epoch": self.epoch + 1, **self.train_epoch(progress)}
                validated = self._validates(self.epoch + 1)
                if validated:
                    values.update(self.validate(val_progress))
            except BaseException as exc:
                if isinstance(exc, KeyboardInterrupt):  # Ctrl-C, SIGTERM
                    self._keep_finished_steps()
                self.train_loader.close()  # its workers now, not once the pass is collected
                raise
            self.finished = None
            values["seconds"] = time.perf_counter() - started
            self.history.append(values)
            improved = validated and self._track(values)
            self.epoch += 1
            if self.main:
                self._append_metrics(values)
                save_checkpoint(self.run_dir / "last.pt", self._state())
                if improved:
                    save_checkpoint(self.run_dir / "best.pt", self._state())
            if on_epoch:
                on_epoch(values)
            done_now += 1
            if self.config.early_stopping and self.stale >= self.config.early_stopping:
                break
            if stop_after is not None and done_now >= stop_after:
                return {"stopped_after": self.epoch}
        return self.finish(val_progress)

    def _keep_finished_steps(self) -> None:
        """Stopped inside an epoch: ``last.pt`` at its last finished step, the step under way
        undone, so that ``--resume`` loses no step and goes on bit for bit. In one process only:
        ranks stopped at different steps could not agree on one without each other."""
        done = self.finished
        if done is None or self.ranks.distributed or done.sums["step"] <= done.first:
            return
        done.undo(self)
        self._checkpoint_mid_epoch(done.sums, done.first, done.seconds)

    def _validates(self, epoch: int) -> bool:
        """Whether ``epoch`` (from 1) is validated: every ``val_every``-th and the last; every
        one without a validation split, where the training loss picks best.pt."""
        config = self.config
        no_split = not config.val_split and config.val_folds is None
        return no_split or epoch % config.val_every == 0 or epoch == config.epochs

    def _track(self, values: dict[str, Any]) -> bool:
        """Whether this epoch's weights become best.pt: a higher validation metric, or the same
        one with a lower validation loss (a saturated Dice or a discrete accuracy ties often).
        Early stopping's patience counts validated epochs without a higher metric."""
        value = values.get(f"val_{self.metric}")
        if value is None:
            value = -values["train_loss"]  # no validation split: keep the lowest training loss
        if self.plateau:
            self.plateau.step(value)
        if self.best is None or value > self.best:
            self.best, self.stale = float(value), 0
        else:
            self.stale += 1
            if not (value == self.best and _lower_loss(values, self.history[:-1])):
                return False
        values["best"] = True
        return True

    def _append_metrics(self, values: dict[str, Any]) -> None:
        with open(self.run_dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps(values) + "\n")

    def finish(self, progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
        """Best weights: threshold sweep on validation, report and plots on validation."""
        from streamvol.train.evaluation import write_report

        distributed.barrier(self.ranks)  # best.pt is written by rank 0
        best = load_checkpoint(self.run_dir / "best.pt", self.device)
        self.model.load_state_dict(best["model"])
        if self.ema and best["ema"]:
            self.ema.load_state_dict(best["ema"])
        report = write_report(self, split=None, prefix="val", progress=progress)
        report["history"] = self.history
        report["stopped_early"] = self.epoch < self.config.epochs
        if self.main:
            write_json_atomic(self.run_dir / "report.json", report)
        distributed.barrier(self.ranks)
        return report
