"""``streamvol score PRED REF``: the CZII F-beta of picks against reference picks, from files.

PRED and REF are each a copick project (all pick files of every run, Angstrom) or a picks CSV
(``experiment, particle_type, x, y, z``, Angstrom); REF may also be volumes with their spot
tables (voxels, turned into Angstrom by each volume's voxel size). The rules are the
challenge's, implemented in ``streamvol.metrics.picking``: a reference particle is found when a
candidate of its type lies within ``0.5 x radius`` of it (inclusive); TP counts references
found, FP = candidates - TP, FN = references - TP, summed over experiments per type; candidates
of experiments absent from the reference are dropped; the score is the weighted F-beta sum over
the total weight.

Radii and weights: from REF's ``copick_config.json`` when it has one, each weight from the
object's ``weight`` where it has one; else the CZII table (apo-ferritin 1, beta-amylase 0,
beta-galactosidase 2, ribosome 1, thyroglobulin 2, virus-like-particle 1; radii 60, 65, 90,
150, 130, 135 Angstrom), all six dividing the score where the picks name only its types, else
only the types the picks name; a type outside that table weighs 1. PRED's copick config (a
``predict`` folder's names the run's types and radii) only gives the radius of a type neither
names, so a folder scores as its ``picks.csv`` does. ``radius`` (``score --radius``) replaces
those radii, or gives the radii of types none of them names (spot tables of one's own types).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from streamvol.core.files import write_json_atomic
from streamvol.errors import BadLabels
from streamvol.io import (
    Dataset,
    copick_config,
    copick_picks,
    discover,
    load_points,
    natural_key,
    open_volume,
    read_copick_config,
    read_copick_weights,
    read_picks_table,
)
from streamvol.metrics.picking import (
    CZII_PARTICLES,
    ParticleType,
    particle_weight,
    picking_score,
)

Picks = dict[str, dict[str, np.ndarray]]


def load_picks(path: str | Path, *, user: str | None = None, session: str | None = None) -> Picks:
    """Experiment -> particle type -> (N, 3) z, y, x Angstrom, from a CSV, a copick project
    (``user`` and ``session``: only its pick files of that ``user_id`` / ``session_id``) or
    volumes with spot tables."""
    path = Path(path)
    if path.is_file() and path.suffix.lower() == ".csv":
        return read_picks_table(path)
    spots = _spot_tables(path) if path.is_dir() and copick_config(path) is None else None
    if spots is not None:
        return spot_table_picks(spots)
    if path.is_dir() or path.suffix.lower() == ".json":
        return copick_picks(path, user=user, session=session)
    raise BadLabels(
        f"{path}: expected a picks CSV (columns experiment, particle_type, x, y, z in Angstrom), "
        f"a copick project (its folder or config) or volumes with spot tables beside them"
    )


def _spot_tables(path: Path) -> Dataset | None:
    """The volumes under ``path`` where they have spot tables beside them, else None."""
    try:
        dataset = discover(path)
    except (OSError, ValueError):
        return None
    if dataset.layout == "volumes" and any(s.spots for s in dataset.sources):
        return dataset
    return None


def spot_table_picks(dataset: Dataset) -> Picks:
    """The spot tables of a volumes dataset (``<stem>.csv`` beside each, voxels) in Angstrom
    by each volume's voxel size, named as ``predict`` names the volumes."""
    picks: Picks = {}
    for spec in dataset.sources:
        if spec.spots is None:
            continue
        volume = open_volume(spec.image)
        if volume.voxel_size is None:
            raise BadLabels(
                f"{spec.image}: records no voxel size, so its spot table {spec.spots.name} "
                "(voxels) cannot be compared with picks in Angstrom; give the reference as a "
                "picks CSV in Angstrom"
            )
        picks[spec.id] = load_points(spec, volume, dataset).by_name(volume.voxel_size)
    return picks


def particle_table(
    ref: str | Path, pred: str | Path | None = None, *, types: set[str] | None = None
) -> dict[str, ParticleType]:
    """Radii and weights: REF's copick config where it has one, else the CZII table (or, where
    ``types``, those the picks hold, go beyond it, its entries of ``types``: the six CZII
    weights divide a score of other particles only for the challenge's data); a type of
    ``types`` neither names takes its radius from PRED's copick config (a particle of one's
    own, weight 1). PRED's config gives nothing else, so a ``predict`` folder (whose config
    names the run's types and radii) scores as its ``picks.csv`` does."""
    config = copick_config(ref)
    if config is not None:
        weights = read_copick_weights(config)
        table = {
            name: ParticleType(radius=radius, weight=particle_weight(name, weights))
            for name, radius in read_copick_config(config).items()
        }
    elif types is not None and not types <= set(CZII_PARTICLES):
        table = {n: p for n, p in CZII_PARTICLES.items() if n in types}
    else:
        table = dict(CZII_PARTICLES)
    rest = sorted((types or set()) - set(table))
    table.update({n: CZII_PARTICLES[n] for n in rest if n in CZII_PARTICLES})
    own = copick_config(pred) if pred is not None else None
    radii = read_copick_config(own) if own is not None else {}
    for name in rest:
        if name not in table and name in radii:
            table[name] = ParticleType(radius=radii[name], weight=1.0)
    return table


def _given_radii(
    particles: dict[str, ParticleType], types: set[str], radius: Mapping[str, float]
) -> dict[str, ParticleType]:
    """``particles`` with ``radius``'s radii (``"*"``: every type of the table and of
    ``types``); a type new to the table weighs as in the CZII table, else 1."""
    every = radius.get("*")
    named = set(particles) | (types if every is not None else set(radius))
    out = {}
    for name in sorted(named):
        r = radius.get(name, every)
        if r is None:
            out[name] = particles[name]
            continue
        known = particles.get(name) or CZII_PARTICLES.get(name)
        out[name] = ParticleType(radius=float(r), weight=known.weight if known else 1.0)
    return out


def score_picks(
    pred: str | Path,
    ref: str | Path,
    *,
    out: str | Path | None = None,
    beta: float = 4.0,
    distance_multiplier: float = 0.5,
    user: str | None = None,
    ref_user: str | None = None,
    session: str | None = None,
    ref_session: str | None = None,
    radius: Mapping[str, float] | None = None,
) -> dict[str, Any]:
    """Score PRED against REF (see the module docstring); write the report as JSON to ``out``
    and its bars, precision, recall and F-beta per type, beside it (``out`` as ``.png``).
    ``radius``: Angstrom by type name, ``"*"`` for every type.

    ``user`` keeps only PRED's copick pick files of that ``user_id`` (e.g. ``streamvol``),
    ``ref_user`` only REF's (e.g. ``curation``), ``session`` and ``ref_session`` those of that
    ``session_id``; without, a project whose runs hold picks of one type from several owners is
    refused.
    """
    references = load_picks(ref, user=ref_user, session=ref_session)
    candidates = load_picks(pred, user=user, session=session)
    types = {t for picks in (references, candidates) for of_run in picks.values() for t in of_run}
    particles = _given_radii(particle_table(ref, pred, types=types), types, radius or {})
    unknown = sorted(types - set(particles))
    if unknown:
        raise BadLabels(
            f"{ref}, {pred}: no radius for particle types {unknown} (neither REF's copick "
            "config, the CZII table nor PRED's copick config names them); give --radius in "
            "Angstrom: one for every type (60) or NAME=R,NAME=R"
        )
    report = picking_score(
        references,
        candidates,
        particles=particles,
        beta=beta,
        distance_multiplier=distance_multiplier,
    )
    scored = sorted(
        (e for e, types in references.items() if any(len(p) for p in types.values())),
        key=natural_key,
    )
    report["experiments"] = {
        "scored": scored,
        "dropped": sorted(set(candidates) - set(references), key=natural_key),  # not in REF
        "unpredicted": [e for e in scored if e not in candidates],  # every particle missed
    }
    report["pred"] = str(pred)
    report["ref"] = str(ref)
    report["particles"] = {
        n: {"radius": p.radius, "weight": p.weight} for n, p in particles.items()
    }
    if out is not None:
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        report["plot"] = str(_plot(report, out.with_suffix(".png")))
        write_json_atomic(out, _finite(report))
    return report


def _plot(report: Mapping[str, Any], path: Path) -> Path:
    from streamvol.metrics import plot_scores

    rows = report["per_type"]
    beta = f"F-beta (beta={report['beta']:g})"
    return plot_scores(
        {
            n: {"precision": r["precision"], "recall": r["recall"], beta: r["fbeta"]}
            for n, r in rows.items()
        },
        path,
        ylabel="score",
        title=f"{report['pred']} against {report['ref']}: weighted F-beta {report['score']:.3f}",
        notes={
            n: f"TP {r['tp']} FP {r['fp']} FN {r['fn']}\nweight {r['weight']:g}"
            for n, r in rows.items()
        },
    )


def _finite(value: Any) -> Any:
    """JSON has no NaN or Inf: such floats become None."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def format_score(report: Mapping[str, Any]) -> str:
    """A plain-text table of a score report: one row per scored type and the weighted score."""
    lines = [
        f"{'particle type':<22} {'TP':>5} {'FP':>5} {'FN':>5} {'prec':>6} {'recall':>6} "
        f"{'F-beta':>6} {'weight':>6}"
    ]
    for name, row in report["per_type"].items():
        lines.append(
            f"{name:<22} {row['tp']:>5} {row['fp']:>5} {row['fn']:>5} {row['precision']:>6.3f} "
            f"{row['recall']:>6.3f} {row['fbeta']:>6.3f} {row['weight']:>6g}"
        )
    lines.append(f"score (weighted F-beta, beta={report['beta']:g}): {report['score']:.4f}")
    return "\n".join(lines)
