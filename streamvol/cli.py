"""The ``streamvol`` command line: a thin Typer layer over the library.

Each command parses its options and calls one library function; all logic is importable and
tested without the CLI. Errors are handled in one place, the app's command group: a user error
(``USER_ERRORS``) ends the command with one red ``error:`` line and exit code 1, its options
named by the command's own flags (``cli_message``); anything else is a bug and keeps its
traceback.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import warnings
from collections.abc import Iterator
from inspect import cleandoc
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console, ConsoleDimensions
from typer.core import TyperGroup

from streamvol import __version__
from streamvol._cli_options import (
    AUGMENT_HELP,
    MODEL_NAMES,
    TrainOptions,
    cli_message,
    command_flags,
    training_options,
)
from streamvol._cli_options import storage as _storage
from streamvol.core.interrupt import Terminated, sigterm_interrupts
from streamvol.errors import StreamvolError
from streamvol.progress import progress as _progress_display
from streamvol.progress import rate_text

WIDTH = 100  # columns of output that is not a terminal (a log, CI); rich would take 80

# What a user got wrong, reported in one line: streamvol's own errors, and the paths the
# operating system refused. Anything else is a bug and keeps its traceback.
USER_ERRORS = (StreamvolError, FileNotFoundError, FileExistsError, PermissionError)


class _Commands(TyperGroup):
    """The app's command group: runs the command asked for, and turns a user error it raises
    into one line and exit code 1 (``_fail``), naming options by this command's flags."""

    def invoke(self, ctx: typer.Context) -> Any:
        try:
            with sigterm_interrupts():  # kill, timeout, a scheduler's limit: stop as Ctrl-C
                return super().invoke(ctx)
        except USER_ERRORS as exc:
            command = self.get_command(ctx, ctx.invoked_subcommand or "")
            raise _fail(exc, command_flags(command) if command else None) from None
        except KeyboardInterrupt as exc:
            hint = RESUMING.get(ctx.invoked_subcommand or "")
            term = isinstance(exc, Terminated)
            what = "terminated" if term else "interrupted"
            console.print(f"{what}{'; ' + hint if hint else ''}", highlight=False, soft_wrap=True)
            raise typer.Exit(143 if term else 130) from None  # 128 + the signal's number


# What a command stopped by Ctrl-C or SIGTERM keeps, and how to go on from there.
_FROM_LAST = (
    "the same command with --resume continues from the run's last.pt (written at each "
    "epoch's end, every --checkpoint-every steps, and, when a one-process run is stopped, at its "
    "last finished step)"
)
RESUMING = {
    "shard": "the same command again keeps the shards already written and writes the rest",
    "train": _FROM_LAST,
    "pretrain": _FROM_LAST,
    "cv": "the same command with --resume continues the folds",
}


app = typer.Typer(
    name="streamvol",
    help="Streaming data engine for deep learning on 3D bio-imaging volumes.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    cls=_Commands,
)


def _rank() -> int:
    """This process's rank under torchrun (``RANK``) or an initialised ``torch.distributed``."""
    for name in ("RANK", "LOCAL_RANK"):
        if os.environ.get(name, "").isdigit():
            return int(os.environ[name])
    import sys

    dist = getattr(sys.modules.get("torch"), "distributed", None)
    if dist is not None and dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    return 0


class _Console(Console):
    """rich's console, but ``WIDTH`` columns wide where it is not a terminal, so tables and
    lines in a log are not cut at rich's 80 (``COLUMNS`` still decides where it is set)."""

    @property
    def size(self) -> ConsoleDimensions:
        size = super().size
        if self._width is None and not self.is_terminal and not self._environ.get("COLUMNS"):
            return ConsoleDimensions(WIDTH, size.height)
        return size


def _out(*, stderr: bool = False) -> Console:
    """Where a command prints: silent on every rank but 0, so a line appears once per run."""
    return _Console(stderr=stderr, quiet=_rank() != 0)


console = _out(stderr=True)


def _say(out: Console, text: str) -> None:
    """A line naming files, printed as is: never folded at the width (a path stays whole to copy)
    nor read as markup (a ``[`` in a name stays)."""
    out.print(text, markup=False, highlight=False, soft_wrap=True)


StorageOption = Annotated[
    str | None,
    typer.Option(
        help='fsspec options for URL shard sets as JSON, e.g. \'{"client_kwargs": '
        '{"endpoint_url": "http://127.0.0.1:9000"}}\'.'
    ),
]


@contextlib.contextmanager
def _warnings_shown() -> Iterator[None]:
    """Show the library's warnings (a crop larger than its volume, ...) as one line each."""

    def show(message, category, filename, lineno, file=None, line=None):
        console.print(f"[yellow]warning:[/] {message}", highlight=False, soft_wrap=True)

    with warnings.catch_warnings():
        warnings.simplefilter("always", UserWarning)
        warnings.showwarning = show
        yield


def _version(value: bool) -> None:
    if value:
        typer.echo(f"streamvol {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """Shard 3D volumes into WebDataset tars, stream them with fresh augmentation, train."""


def _fail(exc: Exception, flags: dict[str, str] | None = None) -> typer.Exit:
    """Report a user-facing error in one line, without a traceback (from every rank, since
    each may fail for its own reason; prefixed with the rank but on rank 0); ``flags`` name the
    running command's options (``cli_message``)."""
    rank = _rank()
    where = f"rank {rank}: " if rank else ""
    from rich.markup import escape

    _Console(stderr=True).print(
        f"[bold red]error:[/] {escape(where + cli_message(exc, flags))}",
        highlight=False,
        soft_wrap=True,
    )
    return typer.Exit(code=1)


@app.command()
def synth(
    kind: Annotated[str, typer.Argument(help="tomograms | nuclei | spots")],
    out: Annotated[Path, typer.Argument(help="Folder to write the data set into.")],
    n: Annotated[
        int | None, typer.Option(help="Tomograms, samples or candidate spots to make.")
    ] = None,
    size: Annotated[
        str | None, typer.Option(help="Volume size: one number or z,y,x (e.g. 64,128,128).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Random seed; the same seed gives the same files.")] = 0,
    overwrite: Annotated[bool, typer.Option(help="Replace a non-empty OUT folder.")] = False,
) -> None:
    """Write a synthetic data set in the on-disk layout real data uses.

    tomograms: a copick project of OME-Zarr tomograms with six particle types and their picks.
    nuclei: sample folders of TIFF slices with masks and a classes.csv of chromatin classes.
    spots: one multi-page TIFF and a spots.csv of true and false spot detections.
    """
    from streamvol import synth as synth_mod
    from streamvol.shard.plan import as_zyx

    steps = synth_mod.total_steps(kind, n)  # checks the kind before any display
    shape = as_zyx(size, name="size") if size else None
    with _progress_display(console) as show:
        unit = "tomograms" if kind == "tomograms" else "samples" if kind == "nuclei" else "sets"
        job = show.job(f"synth {kind}", steps, unit=unit)
        path = synth_mod.make(
            kind, out, n=n, size=shape, seed=seed, overwrite=overwrite, progress=job.advance
        )
    _say(_out(), f"wrote {kind} to {path}")


@app.command()
def shard(
    sources: Annotated[
        list[Path],
        typer.Argument(help="Data set folders (copick project, sample folders) or volumes."),
    ],
    out: Annotated[
        str,
        typer.Option(
            help="Output folder for the tars and manifest.json, or a URL (s3://bucket/set: "
            "tars uploaded whole, the manifest last)."
        ),
    ] = "shards/default",
    plan: Annotated[
        str,
        typer.Option(
            help="grid | points | sample: where crops are taken; regions: each volume stored "
            "once, crop positions drawn afresh every epoch."
        ),
    ] = "grid",
    crop: Annotated[str, typer.Option(help="Crop size: one number or z,y,x.")] = "64",
    context: Annotated[
        str,
        typer.Option(
            help="Margin kept around each crop: auto (what --augment needs on the set's voxels, "
            "rotations turning physical space; plus max shift) or N."
        ),
    ] = "auto",
    augment: Annotated[
        str,
        typer.Option(
            help=f"Augmentation the shards are for, which sizes --context auto: {AUGMENT_HELP}."
        ),
    ] = "default",
    max_shift: Annotated[
        int, typer.Option(help="Extra shift margin; regions: how far crops on picks move.")
    ] = 0,
    stride: Annotated[str | None, typer.Option(help="Grid step (default: the crop size).")] = None,
    negatives: Annotated[
        float, typer.Option(help="Background crops per point (points, regions), away from picks.")
    ] = 0.0,
    per_point: Annotated[
        bool, typer.Option(help="Regions: one crop per pick, centred on it (+- --max-shift).")
    ] = True,
    crops_per_region: Annotated[
        int, typer.Option(help="Regions: uniform crops per region and epoch (segmentation).")
    ] = 0,
    region_max: Annotated[
        int, typer.Option(help="Regions: bytes a stored region may hold; larger volumes are tiled.")
    ] = 1 << 30,
    pad: Annotated[
        str, typer.Option(help="Fill beyond the volume edge: reflect | zero | none.")
    ] = "reflect",
    dtype: Annotated[str, typer.Option(help="Stored dtype: keep | float16 | uint8.")] = "keep",
    split: Annotated[
        str, typer.Option(help="Train,val,test fractions, grouped by source.")
    ] = "0.8,0.1,0.1",
    folds: Annotated[
        int | None, typer.Option(help="Write K folds instead of train/val/test.")
    ] = None,
    classes: Annotated[
        Path | None, typer.Option(help="Class CSV (sample, class); one for every SOURCE.")
    ] = None,
    level: Annotated[int, typer.Option(help="OME-NGFF resolution level.")] = 0,
    task: Annotated[
        str,
        typer.Option(
            help="What the shards train. classification: a class per crop (the sample's, or "
            "the pick at its centre; background for negatives). segmentation: a voxel mask per "
            "crop. detection: crops keep every pick inside them as points, for particle "
            "picking (targets drawn after augmentation). auto: segmentation for a grid over "
            "masked volumes, detection for a grid or regions over picks, else classification."
        ),
    ] = "auto",
    voxel_size: Annotated[
        str | None,
        typer.Option(
            help="Voxel size in Angstrom, one number or z,y,x, for sources whose files record "
            "none (TIFF without ImageJ metadata, .npy); replaces a file's own, with a warning."
        ),
    ] = None,
    radius: Annotated[
        str | None,
        typer.Option(
            help="Particle radii in Angstrom, for detection sets and for placing negatives: "
            "one number for every type (60) or NAME=R,NAME=R; spot tables have none, and "
            "these replace a copick config's."
        ),
    ] = None,
    tomogram: Annotated[
        str, typer.Option(help="Copick: the tomogram of each run (<name>.zarr).")
    ] = "denoised",
    voxel_spacing: Annotated[
        float | None,
        typer.Option(help="Copick: the VoxelSpacing<s> folder to read where runs have several."),
    ] = None,
    user_id: Annotated[
        list[str] | None,
        typer.Option(
            help="Copick: only the pick files of this user_id (repeat to join several), where "
            "runs hold picks of several users (curation, a model's predictions, annotators)."
        ),
    ] = None,
    session_id: Annotated[
        list[str] | None,
        typer.Option(help="Copick: only the pick files of this session_id (repeat to join)."),
    ] = None,
    segmentation: Annotated[
        str | None,
        typer.Option(
            help="Copick: the segmentation that is each run's mask, at the tomograms' voxel "
            "spacing, as copick's URI: NAME, NAME:USER_ID or NAME:USER_ID/SESSION_ID (NAME an "
            "object's, or a multilabel one's); runs without it are left out."
        ),
    ] = None,
    shard_size: Annotated[int, typer.Option(help="Samples per tar.")] = 256,
    seed: Annotated[int, typer.Option(help="Seed for splits and negative crops.")] = 0,
    workers: Annotated[int | None, typer.Option(help="Local dask workers.")] = None,
    processes: Annotated[
        bool, typer.Option(help="Local dask processes instead of threads.")
    ] = False,
    scheduler: Annotated[
        str | None, typer.Option(help="Address of a dask.distributed scheduler.")
    ] = None,
    overwrite: Annotated[
        bool, typer.Option(help="Replace a folder made by another command.")
    ] = False,
    max_bytes: Annotated[
        str | None,
        typer.Option(help="Refuse to start when the output would exceed this, e.g. 50G."),
    ] = None,
    storage_options: StorageOption = None,
) -> None:
    """Plan crops and write WebDataset tar shards with a manifest (dask, lazy crops).

    Crops are read from the volumes only when their shard is written; a rerun skips finished
    shards whose inputs (crops, classes, source files) are unchanged; a different command into
    a non-empty folder is refused unless --overwrite. One writer per folder (a lock file names
    it); output that would not fit the disk (or --max-bytes) is refused before anything is
    written, and output many times the sources' voxels (overlapping blocks) is warned of.
    """
    import sys

    from streamvol.shard import parse_config
    from streamvol.shard import shard as run_shard
    from streamvol.shard.sharder import parse_size

    limit = parse_size(max_bytes) if max_bytes else None
    config = parse_config(
        sources,
        plan=plan,
        crop=crop,
        context=context,
        augment=augment,
        max_shift=max_shift,
        stride=stride,
        negatives=negatives,
        per_point=per_point,
        crops_per_region=crops_per_region,
        region_max=region_max,
        pad=pad,
        dtype=dtype,
        split=split,
        folds=folds,
        classes=classes,
        level=level,
        task=task,
        shard_size=shard_size,
        seed=seed,
        voxel_size=voxel_size,
        radius=radius,
        tomogram=tomogram,
        voxel_spacing=voxel_spacing,
        user_id=user_id,
        session_id=session_id,
        segmentation=segmentation,
    )
    with _warnings_shown(), _progress_display(console) as show:
        job = show.job("shard: reading sources, planning crops", unit="shards")

        def written(done: int, total: int) -> None:
            if job.total is None:  # the first shard: planning is over, time the writing
                job.restart("shard: writing", total)
            job.update(done, total)

        result = run_shard(
            config,
            out,
            workers=workers,
            processes=processes,
            scheduler=scheduler,
            overwrite=overwrite,
            command=_recorded_command(sys.argv[1:]),
            progress=written,
            max_bytes=limit,
            storage_options=_storage(storage_options),
        )
    _print_shard_result(result)


def _recorded_command(args: list[str]) -> str:
    """The command line the manifest records, its ``--storage-options`` (credentials) left out:
    a manifest travels with its shards, into buckets others read."""
    kept = []
    hidden = False
    for arg in args:
        if hidden:
            arg, hidden = "<not recorded>", False
        elif arg == "--storage-options":
            hidden = True
        elif arg.startswith("--storage-options="):
            arg = "--storage-options=<not recorded>"
        kept.append(arg)
    return shlex.join(["streamvol", *kept])


def _print_shard_result(result) -> None:
    from streamvol.stream.inspect import summary_table

    out = _out()
    out.print(summary_table(result.manifest))
    mb = result.bytes_written / 1e6
    rate = mb / result.seconds if result.seconds else 0.0
    wrote, kept = len(result.written), len(result.skipped)
    out.print(
        f"wrote {wrote} shard{'s' * (wrote != 1)} ({mb:.1f} MB), skipped {kept} finished "
        f"one{'s' * (kept != 1)}, in {result.seconds:.1f} s ({rate:.1f} MB/s) -> {result.out}"
    )


@app.command()
def inspect(
    shards: Annotated[str, typer.Argument(help="A shard folder or URL (holding manifest.json).")],
    verify: Annotated[
        bool,
        typer.Option(
            help="Check every shard's sha256, keys, member checksums and sample count, and "
            "report tars the manifest does not list."
        ),
    ] = False,
    preview: Annotated[
        Path | None, typer.Option(help="Write a PNG montage of crops with labels overlaid.")
    ] = None,
    n: Annotated[int, typer.Option(help="Crops in the preview.")] = 16,
    preview_augment: Annotated[
        Path | None, typer.Option(help="Write a PNG of one crop under 8 augmentation draws.")
    ] = None,
    augment: Annotated[
        str, typer.Option(help="Augmentation preset or file to preview.")
    ] = "default",
    storage_options: StorageOption = None,
) -> None:
    """Summarise a shard set, verify its checksums, and preview crops as a PNG montage."""
    from streamvol.shard.manifest import read_manifest
    from streamvol.stream.inspect import describe, summary_table
    from streamvol.stream.inspect import preview as make_preview
    from streamvol.stream.inspect import verify as run_verify

    out = _out()
    storage = _storage(storage_options)
    manifest = read_manifest(shards, storage)
    out.print(summary_table(manifest))
    for line in describe(manifest):
        out.print(line, highlight=False, soft_wrap=True)
    if verify:
        with _progress_display(console) as show:
            job = show.job("verify: reading every shard", unit="MB")

            def read(done: int, total: int) -> None:
                job.update(done / 1e6, total / 1e6)

            problems = run_verify(shards, storage, progress=read)
        for problem in problems:
            console.print(f"[red]{problem}[/]", highlight=False, soft_wrap=True)
        if problems:
            raise typer.Exit(code=1)
        _say(out, f"verified: every shard of {shards} matches the manifest")
    if preview:
        _say(out, f"preview: {make_preview(shards, preview, n=n, storage=storage)}")
    if preview_augment:
        from streamvol.stream.inspect import preview_augmented

        path = preview_augmented(shards, preview_augment, augment, storage=storage)
        _say(out, f"augmentation preview: {path}")


RunName = Annotated[
    str | None, typer.Option(help="Run name: the folder runs/NAME (default: the model's name).")
]
RunsFolder = Annotated[Path, typer.Option(help="Folder of run folders.")]
Resume = Annotated[bool, typer.Option(help="Continue the run in runs/NAME exactly.")]
ShardsArgument = Annotated[
    str, typer.Argument(help="A shard folder or URL (holding manifest.json).")
]


@app.command()
@training_options("train")
def train(
    shards: ShardsArgument,
    name: RunName = None,
    runs: RunsFolder = Path("runs"),
    resume: Resume = False,
    *,
    options: TrainOptions,
) -> None:
    """Train a 3D model on a shard set with fresh augmentation every epoch.

    Writes runs/NAME/: config.json, shards_manifest.json (the set's manifest, which predict
    uses on new volumes), metrics.jsonl, best.pt, last.pt, report.json and PNG plots.
    Detection (--task detection, on picks): targets drawn from the augmented picks; after
    training, a threshold per particle type chosen on the whole validation tomograms
    (thresholds.json), which evaluate and predict reuse. Fine-tuning: --pretrained with a
    checkpoint of train or pretrain, and --freeze-features or --unfreeze-every.
    """
    from streamvol.train import Trainer

    config = options.config(shards)
    run_dir = runs / (name or (config.model if config.model != "auto" else "run"))
    with _warnings_shown():
        trainer = Trainer(config, run_dir, resume=resume)
    _print_transfer(trainer)
    report = _fit(trainer)
    _print_report(report, run_dir)


@app.command()
@training_options("pretrain")
def pretrain(
    shards: ShardsArgument,
    name: RunName = None,
    runs: RunsFolder = Path("runs"),
    resume: Resume = False,
    *,
    options: TrainOptions,
) -> None:
    """Pretrain a model's encoder as an autoencoder on the shards' crops, labels unused.

    The model's per-voxel form (its feature levels under a light decoder; unet3d and vit3d as
    they segment) learns to reconstruct each augmented crop (--loss mse | l1) from itself, or
    from a corrupted copy: --noise (denoising), --mask-ratio and --mask-block (inpainting).
    Writes runs/NAME/ as train does, with val_reconstruction.png (input, reconstruction and
    clean crop) and R^2 as the validation metric; then `streamvol train SHARDS --model NAME
    --pretrained runs/NAME/best.pt` fine-tunes its encoder.
    """
    from streamvol.train import Trainer
    from streamvol.train.pretrain import fold_splits

    config = fold_splits(options.config(shards, task="reconstruction"))
    model = config.model if config.model != "auto" else "pretrain"
    run_dir = runs / (name or f"{model}-ae")
    with _warnings_shown():
        trainer = Trainer(config, run_dir, resume=resume)
    report = _fit(trainer)
    _print_report(report, run_dir)


def _print_transfer(trainer) -> None:
    done = getattr(trainer, "transferred", None)
    if not done:
        return
    fresh = ", ".join(done["new"]) or "none"
    line = f"pretrained: {done['loaded']} of {done['total']} tensors from {done['from']}"
    line += f" (new: {fresh}"
    if done["mismatched"]:
        line += f"; other shapes, left new: {', '.join(done['mismatched'])}"
    _out().print(line + ")", highlight=False, soft_wrap=True)


@app.command()
def models(
    model: Annotated[
        str | None,
        typer.Argument(metavar="NAME", help=f"A model: {', '.join(MODEL_NAMES)}."),
    ] = None,
) -> None:
    """List the models, or one model's options (set them with --model-option KEY=VALUE)."""
    from rich.table import Table

    from streamvol import models as registry

    out = _out()
    if model is None:
        table = Table(title="models (streamvol models NAME: its options)")
        table.add_column("model")
        table.add_column("what it is")
        for name in registry.available():
            table.add_row(name, _first_line(registry.summary(name)))
        out.print(table)
        return
    options = registry.describe(model)
    table = Table(title=f"{model}: --model-option KEY=VALUE")
    table.add_column("option")
    table.add_column("type")
    table.add_column("default")
    for option in options:
        default = "(required)" if option.default is inspect_empty() else option.default
        if isinstance(default, tuple):
            default = ",".join(map(str, default))
        table.add_row(option.name, option.type, str(default))
    out.print(table)
    note = {
        "input_shape": "input_shape is the shards' crop unless set",
        "task": "task is segment for segmentation, detection and pretraining, else classify",
    }
    for key, text in note.items():
        if any(o.name == key for o in options):
            out.print(f"{text}.", highlight=False)


def inspect_empty() -> Any:
    import inspect

    return inspect.Parameter.empty


def _first_line(text: str) -> str:
    return " ".join(text.strip().split("\n\n")[0].split())


def _fit(trainer, label: str = "") -> dict:
    """``trainer.fit()`` with a bar (or plain lines) for each epoch's training and validation
    batches, and one line per epoch; ``label`` goes before each (``fold1 (2/5) ``)."""
    out = _out()
    epochs = trainer.config.epochs
    per = trainer.config.batch_size * trainer.ranks.world_size  # every rank takes a batch a step
    with _progress_display(console) as show:
        job = show.job(
            f"{label}epoch {trainer.epoch + 1}/{epochs}",
            trainer.steps_per_epoch,
            unit="batches",
            per=per,
            rate_unit="samples",
        )
        phase = {"name": ""}
        whole = trainer.task.kind == "detection"  # its best weights predict whole tomograms

        def follow(name: str) -> Any:
            def update(done: int, total: int) -> None:
                final = name == "validation" and phase["name"] in ("done", "final")
                if final:  # after the last epoch: the best weights' pass
                    phase["name"] = "final"
                    name_now = f"{label}validation of the best weights"
                    name_now += " (whole tomograms)" if whole else ""
                else:
                    phase["name"] = name
                    name_now = f"{label}epoch {trainer.epoch + 1}/{epochs}"
                    name_now += " validation" if name == "validation" else ""
                if job.description != name_now:
                    job.restart(name_now, total, unit="windows" if final and whole else None)
                job.update(done, total)

            return update

        def on_epoch(values: dict) -> None:
            phase["name"] = "done"
            out.print(f"{label}{_epoch_line(values, epochs)}", highlight=False, soft_wrap=True)

        return trainer.fit(
            on_epoch=on_epoch,
            progress=follow("training"),
            val_progress=follow("validation"),
            on_start=lambda: out.print(
                f"{label}{_start_line(trainer)}", highlight=False, soft_wrap=True
            ),
        )


def _start_line(trainer) -> str:
    """``unet3d for detection (5.61 M parameters) on cpu, float32: 36 batches of 4 an epoch,
    2 epochs, 2 loader workers, --augment default in the workers -> runs/unet3d``: what is
    about to run, before a first batch that can take minutes (workers starting, kernels
    compiling, a large model on a CPU). Where the augmentation runs is said because
    ``--augment-device gpu`` without CUDA runs it on the CPU, in the training process. Under
    ``torchrun`` the batches and workers are each rank's; rates count every rank's samples."""
    from streamvol.train.setup import model_name

    config = trainer.config
    if trainer.epoch >= config.epochs:  # --resume of a finished run
        return (
            f"{trainer.run_dir}: its {config.epochs} epochs are done, nothing to resume; its best "
            "weights are validated again (to train on: train --pretrained "
            f"{trainer.run_dir / 'best.pt'})"
        )
    params = sum(p.numel() for p in trainer.model.parameters()) / 1e6
    amp = str(trainer.amp).removeprefix("torch.") if trainer.amp is not None else "float32"
    start = f", from epoch {trainer.epoch + 1}" if trainer.epoch else ""
    ranks = trainer.ranks.world_size
    each = f" on each of {ranks} ranks" if ranks > 1 else ""
    steps = trainer.steps_per_epoch
    every = config.val_every
    splits = config.val_split or config.val_folds is not None
    validated = f" (validating every {every} and the last)" if every > 1 and splits else ""
    n = config.accumulate
    updates = f" (an update every {n} batches)" if n > 1 else ""
    if trainer.augment is None:
        augment = "--augment none"
    elif config.augment_device == "gpu":
        augment = f"--augment {config.augment} on each batch on {trainer.device.type}"
    else:
        augment = f"--augment {config.augment} in the {'workers' if config.workers else 'loader'}"
    return (
        f"{model_name(config, trainer.task)} for {trainer.task.kind} ({params:.3g} M parameters) "
        f"on {trainer.device.type}, {amp}: {steps} batch{'es' * (steps != 1)} of "
        f"{config.batch_size} an epoch{each}{updates}, "
        f"{config.epochs} epoch{'s' * (config.epochs != 1)}"
        f"{start}{validated}, {config.workers} loader worker{'s' * (config.workers != 1)}"
        f"{' a rank' if ranks > 1 else ''}, {augment} -> {trainer.run_dir}"
    )


def _epoch_line(values: dict, epochs: int) -> str:
    """``epoch 3/15: train_loss 0.247, val_loss 0.173, val_balanced_accuracy 0.920, ... (1.9 s,
    321 samples/s)``, the keys of ``metrics.jsonl``."""
    skip = {"epoch", "seconds", "train_samples_per_s", "lr", "best"}
    shown = [f"{k} {v:.3f}" for k, v in values.items() if k not in skip and isinstance(v, float)]
    if "trainable_levels" in values:
        shown.append(_levels_text(values["trainable_levels"], values["feature_levels"]))
    extra = f"{values.get('seconds', 0.0):.1f} s"
    if isinstance(values.get("train_samples_per_s"), float):
        extra += f", {rate_text(values['train_samples_per_s'])} samples/s"
    best = " (best so far)" if values.get("best") else ""
    return f"epoch {values['epoch']}/{epochs}: {', '.join(shown)} ({extra}){best}"


def _levels_text(n: int, total: int) -> str:
    """``features: levels 3-4 of 4 trainable`` (the deepest ``n`` of ``total``)."""
    if n <= 0:
        return f"features: frozen (0 of {total} levels trainable)"
    first = total - n + 1
    which = f"level {total}" if n == 1 else f"levels {first}-{total}"
    return f"features: {which} of {total} trainable"


def _metrics_line(report: dict) -> str:
    """The task's headline metrics that are defined (an undefined one is left out, not None)."""
    if report.get("task") == "reconstruction":
        keys: tuple[str, ...] = ("loss", "r2")
    elif report.get("task") == "detection":  # the CZII score of whole tomograms
        keys = ("score",)
    elif "dice" in report:
        keys = ("dice", "iou", "sensitivity", "specificity", "roc_auc")
    else:
        keys = ("accuracy", "balanced_accuracy", "f1", "roc_auc", "average_precision")
    shown = {k: report[k] for k in keys if isinstance(report.get(k), float)}
    return ", ".join(f"{k} {v:.3f}" for k, v in shown.items())


def _print_report(report: dict, run_dir: Path) -> None:
    out = _out()
    if report.get("task") == "detection" and "per_type" in report:
        from streamvol.predict import format_score

        n = len(report["experiments"])
        out.print(f"{report['split']} ({n} tomogram{'s' * (n != 1)}, whole):")
        out.print(format_score(report), highlight=False)
    else:
        split = report.get("split", "val")
        out.print(f"{split}: {_metrics_line(report)}", highlight=False, soft_wrap=True)
    plots = dict(report.get("plots", {}))
    if "curves" not in plots and (Path(run_dir) / "curves.png").is_file():
        plots["curves"] = str(Path(run_dir) / "curves.png")
    for label, path in plots.items():
        _say(out, f"  {label}: {path}")
    _say(out, f"run: {run_dir}")


TTA_HELP = (
    "Test-time augmentation: none | flips (the 8 mirror combinations) | rot90z (the 4 turns "
    "about z, which keep anisotropic voxels as they are; square y-x crops) | all (the 16 both "
    "make); the mean of the views' probabilities, maps turned back first. Detection, whole "
    "tomograms: flips the 3 mirrors, rot90z the 3 turns, all both."
)
TtaOption = Annotated[str, typer.Option(help=TTA_HELP)]


@app.command()
def evaluate(
    run: Annotated[Path, typer.Argument(help="A run folder written by `streamvol train`.")],
    split: Annotated[str, typer.Option(help="Split to score.")] = "test",
    tta: TtaOption = "none",
    device: Annotated[str | None, typer.Option(help="auto | cpu | cuda.")] = None,
    timeout: Annotated[
        float, typer.Option(help="Seconds without a batch before the loader gives up (0: never).")
    ] = 600.0,
    storage_options: StorageOption = None,
) -> None:
    """Score a trained run on a split: metrics, ROC and PR curves, confusion matrices, or
    segmentation's crops from the worst to the best Dice.

    Detection runs predict the split's tomograms whole and report the CZII F-beta per type.
    """
    from streamvol.train import evaluate as run_evaluate

    with _progress_display(console) as show:
        report = run_evaluate(
            run,
            split=split,
            tta=tta,
            device=device,
            timeout=timeout,
            storage_options=_storage(storage_options),
            progress=show.job(
                f"evaluate {split}{f' (TTA {tta})' if tta != 'none' else ''}",
                unit=_evaluation_unit(run, _storage(storage_options)),
            ),
        )
    _print_report(report, run)


def _evaluation_unit(run: Path, storage_options: dict | None) -> str:
    """What evaluating ``run`` counts: windows of whole tomograms (detection), else batches."""
    from streamvol.train import run_task

    return "windows" if run_task(run, storage_options) == "detection" else "batches"


@app.command()
def predict(
    run: Annotated[Path, typer.Argument(help="A run folder written by `streamvol train`.")],
    sources: Annotated[
        list[Path] | None,
        typer.Argument(
            help="Volumes to predict whole: copick projects, volume files or folders (any "
            "format streamvol reads). Without: the run's shards (or, for detection, the "
            "tomograms of --split)."
        ),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(help="Folder for volumes (default predictions/), CSV for shards."),
    ] = None,
    split: Annotated[str, typer.Option(help="Split of the shard set to predict.")] = "test",
    shards: Annotated[str | None, typer.Option(help="Other shards (default: the run's).")] = None,
    tta: Annotated[
        str | None,
        typer.Option(
            help="none | flips | rot90z | all: on shards as evaluate --tta; on whole volumes "
            "flips the 3 mirrors, rot90z the 3 turns about z, all both (also flips,rot90); "
            "default: the run's thresholds.json, else none."
        ),
    ] = None,
    patch: Annotated[
        str | None, typer.Option(help="Window size: N or z,y,x (default: the run's).")
    ] = None,
    overlap: Annotated[
        float | None, typer.Option(help="Window overlap fraction (default 0.25).")
    ] = None,
    batch_size: Annotated[int | None, typer.Option(help="Windows per batch.")] = None,
    peaks: Annotated[
        str | None, typer.Option(help="nms (local maxima) | cc (component centroids).")
    ] = None,
    distance: Annotated[
        float | None,
        typer.Option("--peak-distance", help="NMS distance as a fraction of the particle radius."),
    ] = None,
    min_size: Annotated[int | None, typer.Option(help="cc: smallest component, voxels.")] = None,
    threshold: Annotated[
        float | None, typer.Option(help="One threshold for every type (default: the run's).")
    ] = None,
    voxel_size: Annotated[
        float | None,
        typer.Option(help="Angstrom per voxel of every volume (default: theirs, else the run's)."),
    ] = None,
    tomogram: Annotated[
        str | None,
        typer.Option(help="Copick tomogram name (default: the run's shards', else denoised)."),
    ] = None,
    voxel_spacing: Annotated[
        float | None,
        typer.Option(help="Copick VoxelSpacing<s> folder (default: the run's shards')."),
    ] = None,
    device: Annotated[str | None, typer.Option(help="auto | cpu | cuda.")] = None,
    timeout: Annotated[
        float, typer.Option(help="Seconds without a batch before the loader gives up (0: never).")
    ] = 600.0,
    storage_options: StorageOption = None,
) -> None:
    """Apply a trained model: whole volumes (picks or label volumes), or shards (a CSV).

    Detection runs write copick picks (overlay/ExperimentRuns/<run>/Picks/
    streamvol_0_<type>.json, Angstrom) and picks.csv; segmentation runs write label and
    probability volumes as OME-Zarr. On shards, each sample's scores and class as CSV.
    """
    from streamvol.predict import parse_tta
    from streamvol.shard.plan import as_zyx
    from streamvol.train import predict_volumes, run_task
    from streamvol.train.runs import predict_run

    kinds = parse_tta(tta)  # "none": (), which turns off the TTA a run saved
    if sources or run_task(run, _storage(storage_options)) == "detection":
        with _warnings_shown(), _progress_display(console) as show:
            job = show.job("predict", unit="windows")
            summary = predict_volumes(
                run,
                sources or None,
                out or Path("predictions"),
                split=split,
                patch=as_zyx(patch, name="patch") if patch else None,
                overlap=overlap,
                batch_size=batch_size,
                tta=None if tta is None else kinds,
                peaks=peaks,
                distance=distance,
                min_size=min_size,
                threshold=threshold,
                voxel_size=voxel_size,
                device=device,
                tomogram=tomogram,
                voxel_spacing=voxel_spacing,
                storage_options=_storage(storage_options),
                progress=lambda what, done, total: job.item(what, done, total),
            )
        _print_predictions(summary, out or Path("predictions"))
        return
    with _progress_display(console) as show:
        path = predict_run(
            run,
            out or Path("predictions.csv"),
            split=split,
            shards=shards,
            tta=tta or "none",
            timeout=timeout,
            storage_options=_storage(storage_options),
            progress=show.job(f"predict {split}", unit="batches"),
        )
    _say(_out(), f"wrote {path}")


def _print_predictions(summary: dict, out: Path) -> None:
    console_out = _out()
    for name, entry in summary["experiments"].items():
        if "picks" in entry:
            counts = ", ".join(f"{k} {v}" for k, v in entry["picks"].items())
            console_out.print(f"{name}: {counts}", highlight=False, soft_wrap=True)
        else:
            _say(console_out, f"{name}: {out / name}")
        if "warning" in entry:
            console.print(f"[yellow]{name}: {entry['warning']}[/]", highlight=False, soft_wrap=True)
    if "picks_csv" in summary:
        _say(console_out, f"picks: {out / 'overlay'} (copick), {summary['picks_csv']}")
    n = len(summary["experiments"])
    _say(console_out, f"{n} volume{'s' * (n != 1)} in {summary['seconds']:.1f} s -> {out}")


@app.command()
def compare(
    runs: Annotated[list[Path], typer.Argument(help="Two or more run folders.")],
    split: Annotated[str, typer.Option(help="Split to compare them on.")] = "test",
    tta: TtaOption = "none",
    out: Annotated[
        Path, typer.Option(help="Folder for compare.json, compare.csv and compare.png.")
    ] = Path("compare"),
    device: Annotated[str | None, typer.Option(help="auto | cpu | cuda.")] = None,
    storage_options: StorageOption = None,
) -> None:
    """Compare runs on one split: a table of their metrics and parameter counts and, for
    classifiers, their ROC and precision-recall curves on one plot. A run not yet evaluated
    on the split (with this --tta) is evaluated first."""
    from rich.table import Table

    from streamvol.train.compare import compare_runs

    with _progress_display(console) as show:
        unit = _evaluation_unit(runs[0], _storage(storage_options))
        job = show.job("compare: evaluating", unit=unit)
        result = compare_runs(
            runs,
            out,
            split=split,
            tta=None if tta == "none" else tta,
            device=device,
            storage_options=_storage(storage_options),
            progress=lambda run, done, total: job.item(f"compare: evaluating {run}", done, total),
        )
    # runs as columns, metrics as rows: runs are few, and a dozen metrics then fit 80 columns
    table = Table(title=f"{result['split']} split: {result['task']}")
    table.add_column("run")
    for row in result["rows"]:
        table.add_column(row["run"], justify="right")
    table.add_row("model", *(str(row["model"]) for row in result["rows"]))
    table.add_row("parameters", *(f"{row['parameters']:,}" for row in result["rows"]))
    for m in result["metrics"]:
        table.add_row(m, *("—" if r[m] is None else f"{r[m]:.3f}" for r in result["rows"]))
    shown = _out()
    shown.print(table)
    for note in result["notes"]:
        console.print(f"[yellow]note:[/] {note}", highlight=False, soft_wrap=True)
    for label, path in result["files"].items():
        _say(shown, f"{label}: {path}")


@app.command()
def score(
    pred: Annotated[
        Path,
        typer.Argument(
            help="Predicted picks (a copick project or picks.csv), or the folder `streamvol "
            "predict` wrote for a segmentation run."
        ),
    ],
    ref: Annotated[
        Path,
        typer.Argument(
            help="Reference picks (a copick project or picks.csv), or, for label volumes, the "
            "masks (sample folders, <stem>_mask volumes: any layout shard reads)."
        ),
    ],
    out: Annotated[Path, typer.Option(help="JSON report to write.")] = Path("score.json"),
    user: Annotated[
        str | None, typer.Option(help="Only PRED's copick pick files of this user_id.")
    ] = None,
    ref_user: Annotated[
        str | None, typer.Option(help="Only REF's copick pick files of this user_id.")
    ] = None,
    session: Annotated[
        str | None, typer.Option(help="Only PRED's copick pick files of this session_id.")
    ] = None,
    ref_session: Annotated[
        str | None, typer.Option(help="Only REF's copick pick files of this session_id.")
    ] = None,
    beta: Annotated[float, typer.Option(help="F-beta's beta (CZII: 4).")] = 4.0,
    radius: Annotated[
        str | None,
        typer.Option(
            help="Particle radii in Angstrom, one number for every type (60) or NAME=R,NAME=R: "
            "for types no copick config or the CZII table names (spot tables), or to replace "
            "theirs."
        ),
    ] = None,
) -> None:
    """CZII F-beta of picks against reference picks: per type TP, FP, FN, precision, recall,
    F-beta, and the weighted score (a reference is found within half its radius). Label
    volumes against masks: Dice and IoU per class, per volume and over all voxels. The
    report is JSON (--out), its bars a PNG beside it."""
    from streamvol.predict import (
        format_label_score,
        format_score,
        is_label_prediction,
        score_labels,
        score_picks,
    )
    from streamvol.shard.config import parse_radius

    out_console = _out()
    if is_label_prediction(pred):
        with _progress_display(console) as show:
            job = show.job("score", unit="slices")
            report = score_labels(
                pred,
                ref,
                out=out,
                progress=lambda what, done, total: job.item(what, done, total),
            )
        out_console.print(format_label_score(report), highlight=False)
        if report["unscored"]:
            console.print(
                f"[yellow]no mask in {ref} for: {', '.join(report['unscored'])}[/]",
                highlight=False,
                soft_wrap=True,
            )
        if report["unpredicted"]:
            console.print(
                f"[yellow]not scored, as {pred} has no prediction for them: REF's "
                f"{', '.join(report['unpredicted'])}[/]",
                highlight=False,
                soft_wrap=True,
            )
    else:
        report = score_picks(
            pred,
            ref,
            out=out,
            user=user,
            ref_user=ref_user,
            session=session,
            ref_session=ref_session,
            beta=beta,
            radius=dict(parse_radius(radius)) if radius else None,
        )
        out_console.print(format_score(report), highlight=False)
        found = {k: _listed(v) for k, v in report["experiments"].items()}
        n = len(report["experiments"]["scored"])
        out_console.print(
            f"experiments scored: {n} ({found['scored']})", highlight=False, soft_wrap=True
        )
        if found["dropped"]:
            console.print(
                f"[yellow]not scored: PRED's experiments {found['dropped']} are not in REF "
                f"(experiment names must match REF's)[/]",
                highlight=False,
                soft_wrap=True,
            )
        if found["unpredicted"]:
            console.print(
                f"[yellow]PRED has no picks for REF's experiments {found['unpredicted']}: every "
                f"particle there counts as missed[/]",
                highlight=False,
                soft_wrap=True,
            )
    _say(out_console, f"report: {out}")
    _say(out_console, f"plot: {report['plot']}")


def _listed(names: list[str], most: int = 8) -> str:
    """Names for one line: the first ``most``, then how many more (the JSON has them all)."""
    more = len(names) - most
    return ", ".join(names[:most]) + (f" and {more} more" if more > 0 else "")


@app.command()
@training_options("cv")
def cv(
    shards: Annotated[str, typer.Argument(help="A shard folder written with --folds K.")],
    folds: Annotated[int | None, typer.Option(help="Folds to use (default: all).")] = None,
    name: Annotated[str | None, typer.Option(help="Run name (default: cv-MODEL).")] = None,
    runs: RunsFolder = Path("runs"),
    resume: Annotated[bool, typer.Option(help="Continue the folds in runs/NAME.")] = False,
    *,
    options: TrainOptions,
) -> None:
    """K-fold cross-validation over fold shards, with every option of train: each fold trains on
    the others and is scored on its own; a table of each metric per fold and mean +- std, and
    (classification) all folds' ROC curves."""
    from streamvol.metrics import format_table
    from streamvol.train.cv import cross_validate

    config = options.config(shards)
    run_dir = runs / (name or f"cv-{config.model}")
    with _warnings_shown():
        result = cross_validate(
            config,
            run_dir,
            folds=folds,
            resume=resume,
            fit=_fit_fold,
            on_fold=lambda k, r: _out().print(
                f"fold{k}: {_metrics_line(r)}", highlight=False, soft_wrap=True
            ),
        )
    out = _out()
    summary = result["summary"]
    keys = [k for k in SUMMARY_KEYS if k in summary]
    keys += [k for k in summary if k.startswith("per_type.") and k.endswith(".fbeta")]
    title = f"cross-validation: {run_dir.name}, {result['folds']} folds (validation of each)"
    out.print(format_table(summary, keys=keys, title=title, digits=3))
    for label, path in result["plots"].items():
        _say(out, f"{label}: {path}")
    _say(out, f"report: {run_dir / 'cv_report.json'}")


def _fit_fold(trainer, fold: int, folds: int) -> dict:
    if fold == 0:
        _print_transfer(trainer)
    return _fit(trainer, f"fold{fold} ({fold + 1}/{folds}) ")


# The metrics cv tabulates, in this order, those the task has (classification, segmentation,
# detection: the CZII score, then each type's F-beta).
SUMMARY_KEYS = (
    "accuracy",
    "balanced_accuracy",
    "precision",
    "recall",
    "sensitivity",
    "specificity",
    "f1",
    "fbeta",
    "roc_auc",
    "average_precision",
    "top2_accuracy",
    "dice",
    "iou",
    "score",
)


@app.command()
def bench(
    shards: Annotated[str, typer.Argument(help="A shard folder or URL (holding manifest.json).")],
    workers: Annotated[
        str, typer.Option(help="Loader worker counts to try, e.g. 0,1,2.")
    ] = "0,1,2",
    modes: Annotated[
        str,
        typer.Option(
            help="Where to augment, each measured: none, cpu (in the loader workers), gpu (on "
            "the batch, on the device: the CPU device without CUDA)."
        ),
    ] = "none,cpu",
    augment: Annotated[
        str, typer.Option(help=f"Augmentation for the cpu and gpu modes: {AUGMENT_HELP}.")
    ] = "default",
    preset: Annotated[str | None, typer.Option(hidden=True, help="Old name of --augment.")] = None,
    train_workers: Annotated[
        int,
        typer.Option(
            help="Loader workers you train with (train --workers): the verdict is about this "
            "configuration, measured even outside --workers."
        ),
    ] = 2,
    augment_device: Annotated[
        str, typer.Option(help="Where you train augmenting (train --augment-device): cpu | gpu.")
    ] = "cpu",
    batch_size: Annotated[int, typer.Option(help="Samples per batch.")] = 16,
    batches: Annotated[int, typer.Option(help="Batches timed per repeat.")] = 20,
    warmup: Annotated[int, typer.Option(help="Batches before timing.")] = 2,
    repeats: Annotated[int, typer.Option(help="Repeats per configuration (median, min-max).")] = 3,
    split: Annotated[str, typer.Option(help="Split to read.")] = "train",
    device: Annotated[str, typer.Option(help="auto | cpu | cuda.")] = "auto",
    model: Annotated[
        str | None,
        typer.Option(help="Also time this model's training step: does the loader keep up?"),
    ] = None,
    task: Annotated[
        str,
        typer.Option(
            help="The task --model is timed for (train --task): auto (the shard set's) | "
            "classification | segmentation | detection | reconstruction."
        ),
    ] = "auto",
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Write the results as JSON.")
    ] = None,
    plot: Annotated[
        Path | None, typer.Option(help="Write a PNG of throughput against workers.")
    ] = None,
    timeout: Annotated[
        float, typer.Option(help="Seconds without a batch before the loader gives up (0: never).")
    ] = 600.0,
    storage_options: StorageOption = None,
) -> None:
    """Measure data-loader throughput and whether it keeps a trainer fed.

    Each of --modes x --workers is timed; with --model, the verdict compares the configuration
    you train with (--augment on --augment-device, --train-workers) with the model's step.
    """

    from streamvol.bench import BenchConfig, parse_list, run_bench
    from streamvol.bench import plot as make_plot
    from streamvol.bench import table as make_table
    from streamvol.core.files import write_json_atomic

    if preset is not None:
        console.print("[yellow]warning:[/] --preset is now --augment", highlight=False)
        augment = preset
    config = BenchConfig(
        shards=shards,
        workers=parse_list(workers),
        modes=parse_list(modes, str, name="modes"),
        batch_size=batch_size,
        batches=batches,
        warmup=warmup,
        repeats=repeats,
        augment=augment,
        split=split,
        device=device,
        model=model,
        task=task,
        train_workers=train_workers,
        augment_device=augment_device,
        timeout=timeout,
        storage_options=_storage(storage_options),
    )
    with _warnings_shown(), _progress_display(console) as show:
        result = run_bench(
            config,
            log=show.print,
            progress=show.job("bench", unit="batches", per=batch_size, rate_unit="samples"),
        )
    out = _out()
    out.print(make_table(result))
    for note in result.notes:
        out.print(f"note: {note}", highlight=False, soft_wrap=True)
    if result.trainer:
        t = result.trainer
        out.print(
            f"trainer ({t['model']} on {t['device']}): {t['samples_per_s']:.1f} samples/s",
            soft_wrap=True,
        )
    if result.verdict:
        out.print(result.verdict, highlight=False, soft_wrap=True)
    if json_out:
        write_json_atomic(json_out, json.loads(json.dumps(result.to_json())))
        _say(out, f"json: {json_out}")
    if plot:
        _say(out, f"plot: {make_plot(result, plot)}")


@app.command()
def demo(
    out: Annotated[
        Path, typer.Option(help="Working folder for the demo's data and shards.")
    ] = Path("demo"),
    seed: Annotated[int, typer.Option(help="Seed of the synthetic data and splits.")] = 0,
    workers: Annotated[int | None, typer.Option(help="Local dask workers.")] = None,
    tomograms: Annotated[
        bool,
        typer.Option(
            help="Particle picking instead: synth tomograms, shard, train a 3D U-Net, predict "
            "held-out tomograms whole, score (CZII F-beta) beside random picks."
        ),
    ] = False,
) -> None:
    """Run the main job end to end on built-in synthetic data: synth, shard, train, evaluate."""
    from streamvol.demo import run_demo
    from streamvol.stream.inspect import summary_table

    out_console = _out()
    with _warnings_shown():
        if tomograms:
            _demo_tomograms(out, seed, workers)
            return
        results = run_demo(out, seed=seed, workers=workers, log=lambda m: _say(console, m))
    for result in results:
        out_console.print(summary_table(result.shards.manifest))
        _say(out_console, f"{result.kind}: shards {result.shards.out}, preview {result.preview}")
    out_console.print("verified: every shard matches its manifest")
    trained = next(r for r in results if r.report is not None)
    _print_report(trained.report, trained.run)


def _demo_tomograms(out: Path, seed: int, workers: int | None) -> None:
    from streamvol.demo import run_tomogram_demo
    from streamvol.predict import format_score

    result = run_tomogram_demo(out, seed=seed, workers=workers, log=lambda m: _say(console, m))
    shown = _out()
    _say(shown, f"held-out tomograms, scored against {result.reference}:")
    shown.print(format_score(result.score), highlight=False)
    shown.print(f"random picks at the true count per type: {result.baseline:.4f}")
    times = ", ".join(f"{k} {v:.0f} s" for k, v in result.seconds.items())
    shown.print(f"time: {times}", highlight=False, soft_wrap=True)
    _say(shown, f"picks: {result.predictions} (copick, picks.csv)")
    _say(shown, f"figures: {result.figure}, {result.score['plot']}")
    _say(shown, f"run: {result.run}")


def _unwrapped(doc: str) -> str:
    """A docstring as help text: each paragraph's wrapped lines joined into one (rich keeps
    single line breaks, which the terminal's own wrapping then leaves ragged); lines that
    start a list item stay lines."""
    lines: list[str] = []
    for line in cleandoc(doc).splitlines():
        text = line.strip()
        if lines and lines[-1] and text and not text.startswith(("- ", "* ")):
            lines[-1] += " " + text
        else:
            lines.append(text)
    return "\n".join(lines)


for _info in app.registered_commands:
    if _info.help is None and _info.callback is not None and _info.callback.__doc__:
        _info.help = _unwrapped(_info.callback.__doc__)


if __name__ == "__main__":
    app(prog_name="streamvol")
