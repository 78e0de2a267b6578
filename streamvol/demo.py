"""``streamvol demo``: the main job end to end on built-in synthetic data.

synth -> shard -> verify -> preview for a light-microscopy set (nuclei) and a cryo-ET set
(tomograms), then synth -> shard -> train -> evaluate for the spot classifier (simple_cnn on
9 x 11 x 11 crops, fresh augmentation every epoch), on 2 CPU cores in a few minutes.

``demo --tomograms`` (``run_tomogram_demo``): particle picking end to end. synth a copick
project -> shard each tomogram once as a region (crops drawn afresh every epoch: one on every
pick, moved by up to 2 voxels, and as many away from the picks) -> train a 3D U-Net on sphere
targets drawn from the augmented picks -> choose a threshold per type on whole validation
tomograms -> predict the held-out tomograms whole (copick picks, picks.csv) -> score with the
CZII F-beta(4), beside random picks at the true count per type.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from streamvol import synth
from streamvol.shard import ShardResult, parse_config, shard
from streamvol.stream.inspect import preview, verify


@dataclass(frozen=True)
class DemoStep:
    """One data set of the demo: how to make it and how to shard it."""

    kind: str
    plan: str
    options: dict


STEPS = (
    DemoStep("nuclei", "sample", {"crop": "24,48,48", "split": "0.6,0.2,0.2", "shard_size": 8}),
    DemoStep("tomograms", "regions", {"crop": "24", "negatives": 1.0, "split": "0.5,0.5,0"}),
    DemoStep(
        "spots",
        "points",
        {"crop": "9,11,11", "split": "0.7,0.15,0.15", "shard_size": 64, "augment": "cryoet"},
    ),
)
SPOTS = 600  # candidate spots in the demo's stack
# Rotation about z only (the cryoet preset: z, small tilt, flips, noise, contrast): a spot's PSF is
# longer in z than in y and x, and free 3D rotation would erase that cue (0.74 against 0.92
# balanced accuracy on this data).
TRAIN = {"model": "simple_cnn", "epochs": 15, "batch_size": 32, "lr": 3e-3, "augment": "cryoet"}


@dataclass(frozen=True)
class DemoResult:
    kind: str
    data: Path
    shards: ShardResult
    preview: Path
    report: dict | None = None  # the test report, for the data set the demo trains on
    run: Path | None = None


def run_demo(
    out: str | Path = "demo",
    *,
    seed: int = 0,
    workers: int | None = None,
    log: Callable[[str], None] = print,
) -> list[DemoResult]:
    """Make each demo data set in ``out/data``, shard it into ``out/shards``, verify, preview."""
    out = Path(out)
    results = []
    for step in STEPS:
        data = out / "data" / step.kind
        log(f"synth {step.kind} -> {data}")
        n = SPOTS if step.kind == "spots" else None
        synth.make(step.kind, data, n=n, seed=seed, overwrite=True)
        config = parse_config([data], plan=step.plan, seed=seed, **step.options)
        target = out / "shards" / step.kind
        log(f"shard {step.kind} ({step.plan} plan) -> {target}")
        result = shard(config, target, workers=workers, command=f"streamvol demo ({step.kind})")
        problems = verify(target)
        if problems:
            raise RuntimeError(f"{target}: verification failed: {problems}")
        png = preview(target, out / f"{step.kind}-preview.png", n=8)
        if step.kind != "spots":
            results.append(DemoResult(step.kind, data, result, png))
            continue
        run, report = _train(target, out / "runs" / "spots", seed, workers, log)
        results.append(DemoResult(step.kind, data, result, png, report, run))
    return results


def _train(
    shards: Path, run: Path, seed: int, workers: int | None, log: Callable[[str], None]
) -> tuple[Path, dict]:
    """Train the spot classifier from scratch (a rerun starts over) and score it on test."""
    import shutil

    from streamvol.train import TrainConfig, Trainer, evaluate

    shutil.rmtree(run, ignore_errors=True)
    config = TrainConfig(shards=str(shards), seed=seed, workers=workers or 2, **TRAIN)
    log(f"train {TRAIN['model']} on {shards} -> {run}")

    def show(values: dict) -> None:
        log(
            f"  epoch {values['epoch']:2d}: train loss {values['train_loss']:.3f}, "
            f"val balanced accuracy {values.get('val_balanced_accuracy', float('nan')):.3f}"
        )

    Trainer(config, run).fit(on_epoch=show)
    log(f"evaluate {run} on test")
    return run, evaluate(run, split="test")


# --- particle picking ---------------------------------------------------------------------------

PICK_RUNS = 18  # synthetic tomograms (64, 128, 128) at 10 A: 14 train, 2 validation, 2 test
PICK_SHARDS = {
    "plan": "regions",  # each tomogram stored once; crop positions drawn afresh every epoch
    "level": 1,  # 20 A voxels: radii 3 to 7.5 voxels, an eighth of the voxels to learn from
    "crop": "16",
    "negatives": 1.0,
    "max_shift": 2,
    "augment": "cryoet",
    "split": "0.78,0.11,0.11",
}
PICK_TRAIN = {
    "task": "detection",
    "model": "unet3d",
    "model_options": {"base_width": 16, "depth": 3},
    "target": "sphere",
    "epochs": 25,
    "batch_size": 16,
    "lr": 4e-3,
    "ema": 0.99,
    "augment": "cryoet",
    "predict_patch": (32, 32, 32),
    "predict_tta": ("flips", "rot90"),
}
BASELINE_DRAWS = 10


@dataclass(frozen=True)
class PickDemo:
    """What ``run_tomogram_demo`` made and measured (``seconds`` per stage and in all)."""

    data: Path
    shards: Path
    run: Path
    predictions: Path
    reference: Path
    score: dict
    baseline: float
    figure: Path
    seconds: dict


def run_tomogram_demo(
    out: str | Path = "demo",
    *,
    seed: int = 0,
    workers: int | None = None,
    log: Callable[[str], None] = print,
) -> PickDemo:
    """Particle picking end to end on synthetic tomograms (see the module docstring); a rerun
    starts over. Everything goes under ``out/tomograms``."""
    import shutil
    import time

    from streamvol.predict import score_picks, split_sources
    from streamvol.train import TrainConfig, Trainer, predict_volumes

    started = time.perf_counter()
    seconds: dict[str, float] = {}

    def lap(stage: str, since: float) -> float:
        now = time.perf_counter()
        seconds[stage] = now - since
        return now

    root = Path(out) / "tomograms"
    data, shards, run = root / "data", root / "shards", root / "run"
    t = time.perf_counter()
    log(f"synth {PICK_RUNS} tomograms -> {data}")
    synth.make("tomograms", data, n=PICK_RUNS, seed=seed, overwrite=True)
    t = lap("synth", t)
    log(f"shard each tomogram once, crops drawn every epoch (level 1, 20 A) -> {shards}")
    config = parse_config([data], seed=seed, **PICK_SHARDS)
    result = shard(config, shards, workers=workers, overwrite=True, command="streamvol demo")
    t = lap("shard", t)
    shutil.rmtree(run, ignore_errors=True)
    train = TrainConfig(shards=str(shards), seed=seed, workers=1, **PICK_TRAIN)
    log(f"train unet3d on sphere targets -> {run}")

    def show(values: dict) -> None:
        log(
            f"  epoch {values['epoch']:2d}: train loss {values['train_loss']:.3f}, "
            f"val loss {values.get('val_loss', float('nan')):.3f}, "
            f"val czii (crops) {values.get('val_czii', float('nan')):.3f}"
        )

    Trainer(train, run).fit(on_epoch=show)
    t = lap("train", t)
    predictions = root / "predictions"
    shutil.rmtree(predictions, ignore_errors=True)
    log(f"predict the held-out tomograms whole -> {predictions}")
    summary = predict_volumes(run, None, predictions, split="test")
    t = lap("predict", t)
    test = split_sources(result.manifest, "test")
    reference = root / "reference-test.csv"
    truth = _write_reference(data, [s["id"] for s in test], reference)
    score = score_picks(predictions, reference, out=root / "score.json")
    extents = {s["id"]: _extent(Path(s["path"])) for s in test}
    baseline = random_baseline(truth, extents, reference, seeds=range(BASELINE_DRAWS))
    figure = _figure(test[0], truth, predictions, root / "picks.png")
    lap("score", t)
    seconds["total"] = time.perf_counter() - started
    log(f"done in {seconds['total']:.0f} s; {len(summary['experiments'])} tomograms predicted")
    return PickDemo(data, shards, run, predictions, reference, score, baseline, figure, seconds)


def _write_reference(data: Path, runs: list[str], path: Path) -> dict:
    """The reference picks of ``runs`` as a picks CSV; returns them (run -> type -> zyx A)."""
    from streamvol.io import copick_picks
    from streamvol.predict import write_picks_csv

    picks = {run: types for run, types in copick_picks(data).items() if run in runs}
    rows = [
        (run, kind, p) for run, types in picks.items() for kind, zyx in types.items() for p in zyx
    ]
    write_picks_csv(path, rows)
    return picks


def _extent(path: Path) -> list[float]:
    """A volume's size (z, y, x) in Angstrom."""
    from streamvol.io import open_volume

    volume = open_volume(path)
    size = volume.voxel_size or (1.0, 1.0, 1.0)
    return [n * s for n, s in zip(volume.shape, size, strict=True)]


def random_baseline(
    truth: dict, extents: dict, reference: Path, *, seeds: Iterable[int] = range(10)
) -> float:
    """The mean CZII score of picks drawn uniformly in each volume, as many per type as the
    reference holds: what a picker that knows the counts but not the places scores."""
    import numpy as np

    from streamvol.predict import score_picks, write_picks_csv

    scores = []
    for s in seeds:
        rng = np.random.default_rng([s, 0xB45E])
        rows = [
            (run, kind, p)
            for run, types in truth.items()
            for kind, zyx in types.items()
            for p in rng.uniform(0, 1, (len(zyx), 3)) * np.asarray(extents[run])
        ]
        path = reference.with_name(f"random-{s}.csv")
        write_picks_csv(path, rows)
        scores.append(score_picks(path, reference)["score"])
        path.unlink()
    return float(np.mean(scores))


def _figure(source: dict, truth: dict, predictions: Path, path: Path) -> Path:
    """A slab of the first test tomogram (level 1, mean over 6 slices around its middle) with
    its reference and predicted picks within the slab."""
    import numpy as np

    from streamvol.io import copick_picks, open_volume
    from streamvol.metrics import plot_picks
    from streamvol.synth import PARTICLES

    volume = open_volume(Path(source["path"]), level=1)
    size = np.asarray(volume.voxel_size)
    image = np.asarray(volume.data.compute(), np.float32)
    mid, half = image.shape[0] // 2, 3
    slab = image[mid - half : mid + half].mean(0)
    found = copick_picks(predictions).get(source["id"], {})

    def within(picks: dict) -> dict:
        out = {}
        for kind, zyx in picks.items():
            vox = np.asarray(zyx).reshape(-1, 3) / size
            keep = np.abs(vox[:, 0] - (mid - 0.5)) <= half + 2
            out[kind] = vox[keep, 1:]
        return out

    radii = {p.name: p.radius / size[1] for p in PARTICLES}
    title = f"{source['id']} (held out), z {mid - half}..{mid + half - 1} at 20 A"
    return plot_picks(
        slab, within(truth[source["id"]]), within(found), path, radii=radii, title=title
    )
