"""``streamvol demo``: the main job end to end on built-in synthetic data.

Until the trainers exist (issue 6) the demo is synth -> shard -> verify -> preview, for a
light-microscopy classification set (nuclei) and a cryo-ET particle set (tomograms).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from streamvol import synth
from streamvol.shard import ShardResult, parse_config, shard, verify
from streamvol.shard.inspect import preview


@dataclass(frozen=True)
class DemoStep:
    """One data set of the demo: how to make it and how to shard it."""

    kind: str
    plan: str
    options: dict


STEPS = (
    DemoStep("nuclei", "sample", {"crop": "24,48,48", "split": "0.6,0.2,0.2", "shard_size": 8}),
    DemoStep(
        "tomograms",
        "points",
        {"crop": "24", "negatives": 1.0, "split": "0.5,0.5,0", "shard_size": 32},
    ),
)


@dataclass(frozen=True)
class DemoResult:
    kind: str
    data: Path
    shards: ShardResult
    preview: Path


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
        synth.make(step.kind, data, seed=seed, overwrite=True)
        config = parse_config([data], plan=step.plan, seed=seed, **step.options)
        target = out / "shards" / step.kind
        log(f"shard {step.kind} ({step.plan} plan) -> {target}")
        result = shard(config, target, workers=workers, command=f"streamvol demo ({step.kind})")
        problems = verify(target)
        if problems:
            raise RuntimeError(f"{target}: verification failed: {problems}")
        png = preview(target, out / f"{step.kind}-preview.png", n=8)
        results.append(DemoResult(step.kind, data, result, png))
    return results
