"""The ``streamvol`` command line: a thin Typer layer over the library.

Each command parses its options and calls one library function; all logic is importable and
tested without the CLI.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from streamvol import __version__
from streamvol.errors import StreamvolError

app = typer.Typer(
    name="streamvol",
    help="Streaming data engine for deep learning on 3D bio-imaging volumes.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True)


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


def _fail(exc: Exception) -> typer.Exit:
    """Report a user-facing error in one line, without a traceback."""
    console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
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

    if kind not in synth_mod.KINDS:
        raise _fail(
            ValueError(f"unknown kind {kind!r}; expected one of {', '.join(synth_mod.KINDS)}")
        )
    try:
        shape = as_zyx(size) if size else None
        with _progress() as bar:
            job = bar.add_task(f"synth {kind}", total=synth_mod.total_steps(kind, n))
            path = synth_mod.make(
                kind,
                out,
                n=n,
                size=shape,
                seed=seed,
                overwrite=overwrite,
                progress=lambda k: bar.advance(job, k),
            )
    except (StreamvolError, ValueError, FileExistsError) as exc:
        raise _fail(exc) from None
    typer.echo(f"wrote {kind} to {path}")


@app.command()
def shard(
    sources: Annotated[
        list[Path],
        typer.Argument(help="Data set folders (copick project, sample folders) or volumes."),
    ],
    out: Annotated[Path, typer.Option(help="Output folder for the tars and manifest.json.")] = Path(
        "shards/default"
    ),
    plan: Annotated[
        str, typer.Option(help="grid | points | sample: where crops are taken.")
    ] = "grid",
    crop: Annotated[str, typer.Option(help="Crop size: one number or z,y,x.")] = "64",
    context: Annotated[
        str,
        typer.Option(help="Margin kept around each crop: auto (free rotation + max shift) or N."),
    ] = "auto",
    augment: Annotated[
        str,
        typer.Option(
            help="Augmentation the shards are for (preset or file): sizes --context auto."
        ),
    ] = "default",
    max_shift: Annotated[int, typer.Option(help="Extra shift margin, in voxels.")] = 0,
    stride: Annotated[str | None, typer.Option(help="Grid step (default: the crop size).")] = None,
    negatives: Annotated[
        float, typer.Option(help="Background crops per point (points plan), away from every point.")
    ] = 0.0,
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
    classes: Annotated[Path | None, typer.Option(help="Class CSV (sample, class).")] = None,
    level: Annotated[int, typer.Option(help="OME-NGFF resolution level.")] = 0,
    task: Annotated[
        str, typer.Option(help="auto | classification | segmentation | detection.")
    ] = "auto",
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
) -> None:
    """Plan crops and write WebDataset tar shards with a manifest (dask, lazy crops).

    Crops are read from the volumes only when their shard is written; a rerun skips finished
    shards; a different command into a non-empty folder is refused unless --overwrite.
    """
    import shlex
    import sys

    from streamvol.shard import parse_config
    from streamvol.shard import shard as run_shard

    try:
        config = parse_config(
            sources,
            plan=plan,
            crop=crop,
            context=context,
            augment=augment,
            max_shift=max_shift,
            stride=stride,
            negatives=negatives,
            pad=pad,
            dtype=dtype,
            split=split,
            folds=folds,
            classes=classes,
            level=level,
            task=task,
            shard_size=shard_size,
            seed=seed,
        )
        with _progress() as bar:
            job = bar.add_task("shards", total=None)
            result = run_shard(
                config,
                out,
                workers=workers,
                processes=processes,
                scheduler=scheduler,
                overwrite=overwrite,
                command=shlex.join(["streamvol", *sys.argv[1:]]),
                progress=lambda done, total: bar.update(job, completed=done, total=total),
            )
    except (StreamvolError, ValueError, FileNotFoundError) as exc:
        raise _fail(exc) from None
    _print_shard_result(result)


def _progress():
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    return Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )


def _print_shard_result(result) -> None:
    from streamvol.shard.inspect import summary_table

    out = Console()
    out.print(summary_table(result.manifest))
    mb = result.bytes_written / 1e6
    rate = mb / result.seconds if result.seconds else 0.0
    out.print(
        f"wrote {len(result.written)} shards ({mb:.1f} MB), skipped {len(result.skipped)} "
        f"finished ones, in {result.seconds:.1f} s ({rate:.1f} MB/s) -> {result.out}"
    )


@app.command()
def inspect(
    shards: Annotated[Path, typer.Argument(help="A shard folder (holding manifest.json).")],
    verify: Annotated[
        bool, typer.Option(help="Check every shard's sha256 and sample count.")
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
) -> None:
    """Summarise a shard set, verify its checksums, and preview crops as a PNG montage."""
    from streamvol.shard.inspect import describe, summary_table
    from streamvol.shard.inspect import preview as make_preview
    from streamvol.shard.manifest import read_manifest
    from streamvol.shard.manifest import verify as run_verify

    out = Console()
    try:
        manifest = read_manifest(shards)
        out.print(summary_table(manifest))
        for line in describe(manifest):
            out.print(line, highlight=False)
        if verify:
            problems = run_verify(shards)
            for problem in problems:
                console.print(f"[red]{problem}[/]", highlight=False, soft_wrap=True)
            if problems:
                raise typer.Exit(code=1)
            out.print(f"verified: every shard of {shards} matches the manifest")
        if preview:
            out.print(f"preview: {make_preview(shards, preview, n=n)}")
        if preview_augment:
            from streamvol.shard.inspect import preview_augmented

            path = preview_augmented(shards, preview_augment, augment)
            out.print(f"augmentation preview: {path}")
    except (StreamvolError, ValueError) as exc:
        raise _fail(exc) from None


@app.command()
def train(
    shards: Annotated[str, typer.Argument(help="A shard folder or URL (holding manifest.json).")],
    model: Annotated[
        str, typer.Option(help="Model name (see --help of streamvol.models) or auto.")
    ] = "auto",
    epochs: Annotated[int, typer.Option(help="Epochs to train.")] = 20,
    batch_size: Annotated[int, typer.Option(help="Samples per batch.")] = 16,
    lr: Annotated[float, typer.Option(help="Peak learning rate.")] = 1e-3,
    weight_decay: Annotated[float, typer.Option(help="Weight decay.")] = 1e-4,
    optimizer: Annotated[str, typer.Option(help="adamw | sgd.")] = "adamw",
    schedule: Annotated[str, typer.Option(help="cosine | step | plateau | none.")] = "cosine",
    warmup: Annotated[int, typer.Option(help="Warmup epochs (linear).")] = 1,
    clip: Annotated[float | None, typer.Option(help="Gradient norm clip (0 = off).")] = 1.0,
    amp: Annotated[
        str, typer.Option(help="auto (bf16 on GPU, off on CPU) | off | bf16 | fp16.")
    ] = "auto",
    ema: Annotated[float | None, typer.Option(help="EMA decay of the weights, e.g. 0.999.")] = None,
    loss: Annotated[
        str,
        typer.Option(
            help="auto | ce | focal | dice | tversky (| mse for heatmaps) or a sum: ce+dice, "
            "ce+tversky+dice, ..."
        ),
    ] = "auto",
    class_weights: Annotated[
        bool, typer.Option(help="Weight classes by the manifest's counts.")
    ] = True,
    task: Annotated[
        str,
        typer.Option(
            help="auto (the shard set's) | classification | segmentation | detection (picks)."
        ),
    ] = "auto",
    target: Annotated[
        str, typer.Option(help="Detection targets: sphere (class map) | heatmap (Gaussians).")
    ] = "sphere",
    target_radius: Annotated[
        float, typer.Option(help="Sphere target: ball radius as a fraction of the particle's.")
    ] = 0.5,
    target_sigma: Annotated[
        float, typer.Option(help="Heatmap target: sigma as a fraction of the particle radius.")
    ] = 0.25,
    pos_weight: Annotated[
        float, typer.Option(help="Detection: weight of particle voxels in ce/mse (1st place: 256).")
    ] = 256.0,
    focal_gamma: Annotated[float, typer.Option(help="Focal loss gamma.")] = 2.0,
    tversky_alpha: Annotated[
        float, typer.Option(help="Tversky loss: weight of false positives.")
    ] = 0.3,
    tversky_beta: Annotated[
        float, typer.Option(help="Tversky loss: weight of false negatives.")
    ] = 0.7,
    width: Annotated[
        int | None, typer.Option(help="Model width (unet3d: channels of the first level).")
    ] = None,
    depth: Annotated[int | None, typer.Option(help="Model depth (unet3d: downsamplings).")] = None,
    predict_patch: Annotated[
        str | None,
        typer.Option(help="Detection: sliding-window size for whole tomograms (default: crop)."),
    ] = None,
    predict_tta: Annotated[
        str, typer.Option(help="Detection: TTA on whole tomograms: none | flips | rot90 | both.")
    ] = "none",
    peaks: Annotated[
        str, typer.Option(help="Detection: nms (local maxima) | cc (centroids).")
    ] = "nms",
    peak_distance: Annotated[
        float, typer.Option(help="Detection: NMS distance as a fraction of the particle radius.")
    ] = 0.5,
    augment: Annotated[
        str, typer.Option(help="Preset (none, flips, default, cryoet) or a TOML/YAML file.")
    ] = "default",
    augment_device: Annotated[
        str, typer.Option(help="cpu (loader workers) | gpu (on the batch).")
    ] = "cpu",
    mixup: Annotated[float, typer.Option(help="MixUp Beta alpha (0: the spec's, off).")] = 0.0,
    cutmix: Annotated[float, typer.Option(help="3D CutMix Beta alpha (0: the spec's, off).")] = 0.0,
    early_stopping: Annotated[
        int | None, typer.Option(help="Stop after N epochs without gain.")
    ] = None,
    metric: Annotated[str, typer.Option(help="Validation metric for best.pt (auto).")] = "auto",
    train_split: Annotated[str, typer.Option(help="Training split.")] = "train",
    val_split: Annotated[str, typer.Option(help="Validation split ('' for none).")] = "val",
    device: Annotated[str, typer.Option(help="auto | cpu | cuda.")] = "auto",
    workers: Annotated[int, typer.Option(help="Loader worker processes.")] = 2,
    seed: Annotated[int, typer.Option(help="Seed of weights, order and augmentation.")] = 0,
    compile: Annotated[bool, typer.Option(help="torch.compile the model.")] = False,
    channels_last: Annotated[bool, typer.Option(help="channels_last_3d memory format.")] = False,
    pretrained: Annotated[
        str | None, typer.Option(help="Start from these weights (a checkpoint; any head).")
    ] = None,
    freeze_features: Annotated[bool, typer.Option(help="Train only the head.")] = False,
    unfreeze_every: Annotated[
        int | None, typer.Option(help="Unfreeze one feature level every N epochs.")
    ] = None,
    name: Annotated[str | None, typer.Option(help="Run name (default: the model name).")] = None,
    runs: Annotated[Path, typer.Option(help="Folder of run folders.")] = Path("runs"),
    resume: Annotated[bool, typer.Option(help="Continue the run in runs/NAME exactly.")] = False,
    checkpoint_every: Annotated[
        int, typer.Option(help="Also write last.pt every N steps (0: at epoch ends only).")
    ] = 0,
    timeout: Annotated[
        float, typer.Option(help="Seconds without a batch before the loader gives up (0: never).")
    ] = 600.0,
) -> None:
    """Train a 3D model on a shard set with fresh augmentation every epoch.

    Writes runs/NAME/: config.json, metrics.jsonl, best.pt, last.pt, report.json and PNG plots.
    Detection (--task detection, on picks): targets drawn from the augmented picks; after
    training, a threshold per particle type chosen on the whole validation tomograms
    (thresholds.json), which evaluate and predict reuse.
    """
    from streamvol.predict import parse_tta
    from streamvol.shard.plan import as_zyx
    from streamvol.train import TrainConfig, Trainer

    try:
        model_options = {
            k: v for k, v in (("base_width", width), ("depth", depth)) if v is not None
        }
        config = TrainConfig(
            shards=shards,
            model=model,
            model_options=model_options or None,
            task=task,
            target=target,
            target_radius=target_radius,
            target_sigma=target_sigma,
            pos_weight=pos_weight,
            focal_gamma=focal_gamma,
            tversky_alpha=tversky_alpha,
            tversky_beta=tversky_beta,
            predict_patch=as_zyx(predict_patch) if predict_patch else None,
            predict_tta=parse_tta(predict_tta),
            peak_method=peaks,
            peak_distance=peak_distance,
            epochs=epochs,
            batch_size=batch_size,
            lr=lr,
            weight_decay=weight_decay,
            optimizer=optimizer,
            schedule=schedule,
            warmup=warmup,
            clip=clip or None,
            amp=amp,
            ema=ema,
            loss=loss,
            class_weights=class_weights,
            augment=augment,
            augment_device=augment_device,
            mixup=mixup,
            cutmix=cutmix,
            early_stopping=early_stopping,
            metric=metric,
            train_split=train_split,
            val_split=val_split or None,
            device=device,
            workers=workers,
            seed=seed,
            compile=compile,
            channels_last=channels_last,
            pretrained=pretrained,
            freeze_features=freeze_features,
            unfreeze_every=unfreeze_every,
            checkpoint_every=checkpoint_every,
            loader_timeout=timeout,
        )
        run_dir = runs / (name or (model if model != "auto" else "run"))
        trainer = Trainer(config, run_dir, resume=resume)
        report = _fit(trainer)
    except (StreamvolError, ValueError, FileNotFoundError) as exc:
        raise _fail(exc) from None
    _print_report(report, run_dir)


def _fit(trainer) -> dict:
    out = Console()
    with _progress() as bar:
        job = bar.add_task(f"epoch {trainer.epoch + 1}", total=trainer.steps_per_epoch)

        def on_epoch(values: dict) -> None:
            shown = {k: v for k, v in values.items() if isinstance(v, float)}
            out.print(
                f"epoch {values['epoch']}/{trainer.config.epochs} "
                + " ".join(f"{k} {v:.4g}" for k, v in shown.items()),
                highlight=False,
            )
            bar.reset(
                job, total=trainer.steps_per_epoch, description=f"epoch {values['epoch'] + 1}"
            )

        return trainer.fit(
            on_epoch=on_epoch,
            progress=lambda done, total: bar.update(job, completed=done, total=total),
        )


def _print_report(report: dict, run_dir: Path) -> None:
    out = Console()
    if report.get("task") == "detection" and "per_type" in report:
        from streamvol.predict import format_score

        out.print(f"{report['split']} ({len(report['experiments'])} tomograms, whole):")
        out.print(format_score(report), highlight=False)
    else:
        keys = ("accuracy", "balanced_accuracy", "f1", "roc_auc", "average_precision", "dice")
        shown = {k: report[k] for k in (*keys, "iou") if isinstance(report.get(k), float)}
        split = report.get("split", "val")
        line = ", ".join(f"{k} {v:.3f}" for k, v in shown.items())
        out.print(f"{split}: {line}", highlight=False)
    plots = dict(report.get("plots", {}))
    if "curves" not in plots and (Path(run_dir) / "curves.png").is_file():
        plots["curves"] = str(Path(run_dir) / "curves.png")
    for label, path in plots.items():
        out.print(f"  {label}: {path}", highlight=False)
    out.print(f"run: {run_dir}", highlight=False)


@app.command()
def evaluate(
    run: Annotated[Path, typer.Argument(help="A run folder written by `streamvol train`.")],
    split: Annotated[str, typer.Option(help="Split to score.")] = "test",
    tta: Annotated[
        bool,
        typer.Option(
            help="Test-time augmentation: the 8 axis flips (crops); flips and 90-degree turns "
            "about z (detection, whole tomograms)."
        ),
    ] = False,
    device: Annotated[str | None, typer.Option(help="auto | cpu | cuda.")] = None,
    timeout: Annotated[
        float, typer.Option(help="Seconds without a batch before the loader gives up (0: never).")
    ] = 600.0,
) -> None:
    """Score a trained run on a split: metrics, ROC and PR curves, confusion matrices.

    Detection runs predict the split's tomograms whole and report the CZII F-beta per type.
    """
    from streamvol.train import evaluate as run_evaluate

    try:
        report = run_evaluate(run, split=split, tta=tta, device=device, timeout=timeout)
    except (StreamvolError, ValueError, FileNotFoundError) as exc:
        raise _fail(exc) from None
    _print_report(report, run)


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
        str,
        typer.Option(
            help="none | flips | rot90 | flips,rot90 (volumes); any but none averages the 8 "
            "axis flips on shards."
        ),
    ] = "none",
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
    peak_distance: Annotated[
        float | None, typer.Option(help="NMS distance as a fraction of the particle radius.")
    ] = None,
    min_size: Annotated[int | None, typer.Option(help="cc: smallest component, voxels.")] = None,
    threshold: Annotated[
        float | None, typer.Option(help="One threshold for every type (default: the run's).")
    ] = None,
    voxel_size: Annotated[
        float | None, typer.Option(help="Angstrom per voxel where the volumes do not say.")
    ] = None,
    tomogram: Annotated[str, typer.Option(help="Copick tomogram name.")] = "denoised",
    device: Annotated[str | None, typer.Option(help="auto | cpu | cuda.")] = None,
    timeout: Annotated[
        float, typer.Option(help="Seconds without a batch before the loader gives up (0: never).")
    ] = 600.0,
) -> None:
    """Apply a trained model: whole volumes (picks or label volumes), or shards (a CSV).

    Detection runs write copick picks (overlay/ExperimentRuns/<run>/Picks/
    streamvol_0_<type>.json, Angstrom) and picks.csv; segmentation runs write label and
    probability volumes as OME-Zarr. On shards, each sample's scores and class as CSV.
    """
    from streamvol.predict import parse_tta, predict_volumes
    from streamvol.predict._run import run_task
    from streamvol.shard.plan import as_zyx
    from streamvol.train.evaluate import predict_run

    try:
        kinds = parse_tta(tta)
        if sources or run_task(run) == "detection":
            with _progress() as bar:
                job = bar.add_task("predict", total=None)
                summary = predict_volumes(
                    run,
                    sources or None,
                    out or Path("predictions"),
                    split=split,
                    patch=as_zyx(patch) if patch else None,
                    overlap=overlap,
                    batch_size=batch_size,
                    tta=kinds if tta != "none" else None,
                    peaks=peaks,
                    distance=peak_distance,
                    min_size=min_size,
                    threshold=threshold,
                    voxel_size=voxel_size,
                    device=device,
                    tomogram=tomogram,
                    progress=lambda what, done, total: bar.update(
                        job, description=what, completed=done, total=total
                    ),
                )
            _print_predictions(summary, out or Path("predictions"))
            return
        path = predict_run(
            run,
            out or Path("predictions.csv"),
            split=split,
            shards=shards,
            tta=bool(kinds),
            timeout=timeout,
        )
    except (StreamvolError, ValueError, FileNotFoundError) as exc:
        raise _fail(exc) from None
    Console().print(f"wrote {path}")


def _print_predictions(summary: dict, out: Path) -> None:
    console_out = Console()
    for name, entry in summary["experiments"].items():
        if "picks" in entry:
            counts = ", ".join(f"{k} {v}" for k, v in entry["picks"].items())
            console_out.print(f"{name}: {counts}", highlight=False)
        else:
            console_out.print(f"{name}: {out / name}", highlight=False)
        if "warning" in entry:
            console.print(f"[yellow]{name}: {entry['warning']}[/]", highlight=False)
    if "picks_csv" in summary:
        console_out.print(f"picks: {out / 'overlay'} (copick), {summary['picks_csv']}")
    console_out.print(
        f"{len(summary['experiments'])} volumes in {summary['seconds']:.1f} s -> {out}"
    )


@app.command()
def score(
    pred: Annotated[Path, typer.Argument(help="Predicted picks: a copick project or picks.csv.")],
    ref: Annotated[Path, typer.Argument(help="Reference picks: a copick project or picks.csv.")],
    out: Annotated[Path, typer.Option(help="JSON report to write.")] = Path("score.json"),
    user: Annotated[
        str | None, typer.Option(help="Only PRED's copick pick files of this user_id.")
    ] = None,
    beta: Annotated[float, typer.Option(help="F-beta's beta (CZII: 4).")] = 4.0,
) -> None:
    """CZII F-beta of picks against reference picks: per type TP, FP, FN, precision, recall,
    F-beta, and the weighted score (a reference is found within half its radius)."""
    from streamvol.predict import format_score, score_picks

    try:
        report = score_picks(pred, ref, out=out, user=user, beta=beta)
    except (StreamvolError, ValueError, FileNotFoundError) as exc:
        raise _fail(exc) from None
    Console().print(format_score(report), highlight=False)
    Console().print(f"report: {out}")


@app.command()
def cv(
    shards: Annotated[str, typer.Argument(help="A shard folder written with --folds K.")],
    model: Annotated[str, typer.Option(help="Model name or auto.")] = "auto",
    folds: Annotated[int | None, typer.Option(help="Folds to use (default: all).")] = None,
    epochs: Annotated[int, typer.Option(help="Epochs per fold.")] = 20,
    batch_size: Annotated[int, typer.Option(help="Samples per batch.")] = 16,
    lr: Annotated[float, typer.Option(help="Peak learning rate.")] = 1e-3,
    augment: Annotated[str, typer.Option(help="Augmentation preset or file.")] = "default",
    workers: Annotated[int, typer.Option(help="Loader worker processes.")] = 2,
    seed: Annotated[int, typer.Option(help="Seed.")] = 0,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda.")] = "auto",
    name: Annotated[str | None, typer.Option(help="Run name (default: cv-MODEL).")] = None,
    runs: Annotated[Path, typer.Option(help="Folder of run folders.")] = Path("runs"),
    timeout: Annotated[
        float, typer.Option(help="Seconds without a batch before the loader gives up (0: never).")
    ] = 600.0,
) -> None:
    """K-fold cross-validation over fold shards: a mean +- std table and all folds' ROC curves."""
    from streamvol.metrics import format_table
    from streamvol.train import TrainConfig
    from streamvol.train.cv import cross_validate

    run_dir = runs / (name or f"cv-{model}")
    try:
        config = TrainConfig(
            shards=shards,
            model=model,
            epochs=epochs,
            batch_size=batch_size,
            lr=lr,
            augment=augment,
            workers=workers,
            seed=seed,
            device=device,
            loader_timeout=timeout,
        )
        result = cross_validate(
            config,
            run_dir,
            folds=folds,
            on_fold=lambda k, r: console.print(
                f"fold {k}: balanced accuracy {r.get('balanced_accuracy')}"
            ),
        )
    except (StreamvolError, ValueError, FileNotFoundError) as exc:
        raise _fail(exc) from None
    out = Console()
    settings = {"n_samples", "n_padding", "beta", "threshold"}  # not metrics
    keys = [k for k in result["summary"] if "." not in k and k not in settings]
    out.print(format_table(result["summary"], keys=keys))
    for label, path in result["plots"].items():
        out.print(f"{label}: {path}")
    out.print(f"report: {run_dir / 'cv_report.json'}")


@app.command()
def bench(
    shards: Annotated[str, typer.Argument(help="A shard folder or URL (holding manifest.json).")],
    workers: Annotated[
        str, typer.Option(help="Loader worker counts to try, e.g. 0,1,2.")
    ] = "0,1,2",
    augment: Annotated[str, typer.Option(help="Modes to try: none, cpu, gpu.")] = "none,cpu",
    preset: Annotated[
        str, typer.Option(help="Augmentation preset or file for cpu/gpu.")
    ] = "default",
    batch_size: Annotated[int, typer.Option(help="Samples per batch.")] = 16,
    batches: Annotated[int, typer.Option(help="Batches timed per repeat.")] = 20,
    warmup: Annotated[int, typer.Option(help="Batches before timing.")] = 2,
    repeats: Annotated[int, typer.Option(help="Repeats per configuration (median, min-max).")] = 3,
    split: Annotated[str, typer.Option(help="Split to read.")] = "train",
    device: Annotated[str, typer.Option(help="auto | cpu | cuda.")] = "auto",
    model: Annotated[
        str | None, typer.Option(help="Also time this model's training step and compare.")
    ] = None,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Write the results as JSON.")
    ] = None,
    plot: Annotated[
        Path | None, typer.Option(help="Write a PNG of throughput against workers.")
    ] = None,
    timeout: Annotated[
        float, typer.Option(help="Seconds without a batch before the loader gives up (0: never).")
    ] = 600.0,
) -> None:
    """Measure data-loader throughput and whether it keeps a trainer fed."""
    import json

    from streamvol.bench import BenchConfig, parse_list, run_bench
    from streamvol.bench import plot as make_plot
    from streamvol.bench import table as make_table
    from streamvol.shard.manifest import write_json_atomic

    try:
        config = BenchConfig(
            shards=shards,
            workers=parse_list(workers),
            modes=parse_list(augment, str),
            batch_size=batch_size,
            batches=batches,
            warmup=warmup,
            repeats=repeats,
            preset=preset,
            split=split,
            device=device,
            model=model,
            timeout=timeout,
        )
        result = run_bench(config, log=lambda m: console.print(m, highlight=False))
    except (StreamvolError, ValueError, FileNotFoundError) as exc:
        raise _fail(exc) from None
    out = Console()
    out.print(make_table(result))
    if result.trainer:
        t = result.trainer
        out.print(f"trainer ({t['model']} on {t['device']}): {t['samples_per_s']:.1f} samples/s")
    if result.verdict:
        out.print(result.verdict, highlight=False)
    if json_out:
        write_json_atomic(json_out, json.loads(json.dumps(result.to_json())))
        out.print(f"json: {json_out}")
    if plot:
        out.print(f"plot: {make_plot(result, plot)}")


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
    from streamvol.shard.inspect import summary_table

    out_console = Console()
    if tomograms:
        _demo_tomograms(out, seed, workers)
        return
    try:
        results = run_demo(
            out, seed=seed, workers=workers, log=lambda m: console.print(m, highlight=False)
        )
    except (StreamvolError, ValueError) as exc:
        raise _fail(exc) from None
    for result in results:
        out_console.print(summary_table(result.shards.manifest))
        out_console.print(f"{result.kind}: shards {result.shards.out}, preview {result.preview}")
    out_console.print("verified: every shard matches its manifest")
    trained = next(r for r in results if r.report is not None)
    _print_report(trained.report, trained.run)


def _demo_tomograms(out: Path, seed: int, workers: int | None) -> None:
    from streamvol.demo import run_tomogram_demo
    from streamvol.predict import format_score

    try:
        result = run_tomogram_demo(
            out, seed=seed, workers=workers, log=lambda m: console.print(m, highlight=False)
        )
    except (StreamvolError, ValueError) as exc:
        raise _fail(exc) from None
    shown = Console()
    shown.print(f"held-out tomograms, scored against {result.reference}:")
    shown.print(format_score(result.score), highlight=False)
    shown.print(f"random picks at the true count per type: {result.baseline:.4f}")
    times = ", ".join(f"{k} {v:.0f} s" for k, v in result.seconds.items())
    shown.print(f"time: {times}", highlight=False)
    shown.print(f"picks: {result.predictions} (copick, picks.csv); figure: {result.figure}")
    shown.print(f"run: {result.run}")


if __name__ == "__main__":
    app(prog_name="streamvol")
