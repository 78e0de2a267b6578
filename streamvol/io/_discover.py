"""Find the volumes and labels under a path, whatever the layout, without reading any voxels.

Three layouts are recognised, in this order:

- **copick** projects: ``copick_config.json`` and/or ``[static/]ExperimentRuns/<run>/
  VoxelSpacing<s>/<tomogram>.zarr``, picks in ``[overlay/]ExperimentRuns/<run>/Picks/*.json``;
  or a copick config of any name whose ``static_root`` / ``overlay_root`` hold those;
- **samples**: one folder per sample holding ``raw/`` (TIFF slices or one stack file) and
  optionally ``mask/``, with a ``classes.csv`` beside them;
- **volumes**: a volume itself, or a folder of volumes, where ``<stem>_mask.<suffix>`` is the
  mask of ``<stem>.<suffix>`` and ``<stem>.csv`` its spot table.

The result is a ``Dataset`` of ``SourceSpec`` entries; volumes are opened later, by the planner.
"""

from __future__ import annotations

import math
import os
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from streamvol.errors import BadLabels, MasksLeftOut, NoVolumeFound, PicksLeftOut
from streamvol.io._labels import (
    ClassTable,
    Points,
    _load_json,
    read_class_csv,
    read_copick_config,
    read_copick_labels,
    read_copick_picks,
    read_copick_weights,
    read_spot_table,
)
from streamvol.io._volume import (
    TIFF_SUFFIXES,
    VOLUME_SUFFIXES,
    Volume,
    _is_zarr_dir,
    natural_key,
    source_id,
)

COPICK_CONFIG = "copick_config.json"
CLASSES_CSV = "classes.csv"
_SPACING_PREFIX = "VoxelSpacing"
_MASK_SUFFIX = "_mask"
_MULTILABEL = "-multilabel"  # copick's suffix of a multilabel segmentation's name
_COUNT_LIMIT = 100_000  # stop counting files for an error message after this many

_TRIED = (
    f"copick project ({COPICK_CONFIG}, [static/]ExperimentRuns/<run>/{_SPACING_PREFIX}<s>/"
    f"<tomogram>.zarr); sample folders (<sample>/raw/ holding TIFF slices or one stack, "
    f"optional <sample>/mask/); volumes (files ending in {', '.join(VOLUME_SUFFIXES)}, zarr "
    f"folders, folders of 2D TIFF slices)"
)


@dataclass(frozen=True)
class SourceSpec:
    """One source volume and where its labels are; ``id`` is key-safe and unique in the dataset."""

    id: str
    image: Path
    mask: Path | None = None
    picks: tuple[Path, ...] = ()
    spots: Path | None = None
    class_name: str | None = None


@dataclass(frozen=True)
class Dataset:
    """Every source found under ``root``, with the class names shared by all of them.

    ``class_names`` are the particle names (copick), the classes of the class CSV, or the labels
    of the spot tables, sorted; ``radii`` the particle radii in Angstrom where known (copick);
    ``weights`` the score weights a copick config gives its particles (the CZII metric's).
    """

    root: Path
    layout: str
    sources: tuple[SourceSpec, ...]
    class_names: tuple[str, ...] = ()
    radii: dict[str, float] = field(default_factory=dict)
    owners_chosen: bool = False  # copick: pick files chosen by user_id / session_id
    mask_names: tuple[str, ...] = ()  # the class of each mask label, where the layout names them
    weights: dict[str, float] = field(default_factory=dict)


def discover(
    path: str | Path,
    *,
    classes: str | Path | ClassTable | None = None,
    tomogram: str = "denoised",
    voxel_spacing: float | None = None,
    user_id: Sequence[str] = (),
    session_id: Sequence[str] = (),
    segmentation: str | None = None,
) -> Dataset:
    """Find every source under ``path`` and its labels; raise ``NoVolumeFound`` if there is none.

    ``classes`` is a class CSV (default: ``classes.csv`` in ``path`` when present), or a
    ``ClassTable`` read for several sources (its rows may name samples of the others);
    ``tomogram`` and ``voxel_spacing`` choose among a copick run's tomograms (other layouts
    ignore them), ``user_id`` and ``session_id`` (any of those given) among its pick files, as
    copick's own tools do; ``segmentation`` is the copick segmentation that is each run's mask,
    as copick's URIs name it, ``NAME[:USER_ID[/SESSION_ID]]`` (runs without it are left out,
    with a ``MasksLeftOut`` warning).
    """
    root = Path(path).expanduser()
    if not root.exists():
        raise NoVolumeFound(f"{root}: no such file or folder")
    class_csv = classes if classes is None or isinstance(classes, ClassTable) else Path(classes)
    project = _copick_project(root)
    given = [
        name
        for name, value in (
            ("user_id", user_id),
            ("session_id", session_id),
            ("segmentation", segmentation),
        )
        if value
    ]
    if given and project is None:
        raise BadLabels(
            f"{root}: {' and '.join(given)} choose among a copick project's pick files and "
            f"segmentations, and this is not a copick project"
        )
    if project is not None:
        if class_csv is not None:
            where = class_csv.path if isinstance(class_csv, ClassTable) else class_csv
            raise BadLabels(
                f"{where}: a class CSV does not apply to the copick project {root}; "
                f"its classes come from its config ({COPICK_CONFIG}) or the pick files"
            )
        dataset = _discover_copick(
            project, tomogram, voxel_spacing, (user_id, session_id), segmentation
        )
    elif _is_volume(root):
        stem = _stem(root.name)
        masks = [
            (_stem(p.name), p)
            for p in _children(root.parent)
            if _stem(p.name) == stem + _MASK_SUFFIX and p != root and _is_volume(p)
        ]
        dataset = _discover_volumes(root, root.parent, [(stem, root), *masks], class_csv)
    elif (root / "raw").is_dir():
        dataset = _discover_samples(root, [root], class_csv)
    elif sample_dirs := [d for d in _children(root) if d.is_dir() and (d / "raw").is_dir()]:
        dataset = _discover_samples(root, sample_dirs, class_csv or _optional(root / CLASSES_CSV))
    else:
        entries = _volume_entries(root)
        if not entries:
            raise NoVolumeFound(_nothing_found(root))
        if class_csv is None and CLASSES_CSV.removesuffix(".csv") not in {s for s, _ in entries}:
            class_csv = _optional(root / CLASSES_CSV)  # unless it is the spot table of "classes"
        dataset = _discover_volumes(root, root, entries, class_csv)
    _check_unique(dataset.sources)
    return dataset


def load_points(spec: SourceSpec, volume: Volume, dataset: Dataset) -> Points | None:
    """The points of ``spec`` in voxels of ``volume``, class ids by ``dataset.class_names``.

    All pick files of a copick run are joined; a spot table is read as is. Raises
    ``PointsOutsideVolume`` if any point lies outside ``volume``; returns None without points.
    """
    names = dataset.class_names or None
    if spec.picks:
        parts = [read_copick_picks(p, volume.voxel_size, names) for p in spec.picks]
        for part in parts:  # one by one, so an error names the file and its own point index
            part.check_inside(volume.shape, volume.path)
        if not dataset.owners_chosen:
            _check_one_owner(spec.id, spec.picks, [len(part.zyx) for part in parts])
        points = Points.concat(parts, names)
    elif spec.spots is not None:
        points = read_spot_table(spec.spots)
        # Spot labels share the dataset's ids unless those are per-sample classes (class CSV).
        if names is not None and spec.class_name is None:
            points = Points.concat([points], names)
    else:
        return None
    points.check_inside(volume.shape, volume.path)
    return points


# --- helpers shared by the layouts --------------------------------------------------------------


def _children(folder: Path) -> list[Path]:
    """Entries of ``folder`` in natural order, without hidden files (``.DS_Store``, ``._x``)."""
    try:
        entries = [p for p in folder.iterdir() if not p.name.startswith(".")]
    except OSError:  # missing, not a folder, unreadable: nothing to list
        return []
    return sorted(entries, key=lambda p: natural_key(p.name))


def _optional(path: Path) -> Path | None:
    return path if path.is_file() else None


def _volume_suffix(name: str) -> str | None:
    lower = name.lower()
    return next((s for s in VOLUME_SUFFIXES if lower.endswith(s)), None)


def _stem(name: str) -> str:
    """``a.ome.zarr`` -> ``a``, ``a.tif`` -> ``a``, a slice folder ``a`` -> ``a``."""
    suffix = _volume_suffix(name)
    stem = name[: -len(suffix)] if suffix else name
    return stem[: -len(".ome")] if stem.lower().endswith(".ome") else stem


def _is_slice_folder(folder: Path) -> bool:
    """A folder whose first TIFF (natural order) is a single 2D plane: one volume, one file a z."""
    import tifffile

    tiffs = [p for p in _children(folder) if p.is_file() and p.suffix.lower() in TIFF_SUFFIXES]
    if not tiffs:
        return False
    try:
        with tifffile.TiffFile(tiffs[0]) as tif:
            shape = [s for s in tif.series[0].shape if s != 1]
    except Exception:
        return True  # a corrupt slice: open_volume names the file when it reads the folder
    return len(shape) == 2


def _is_volume(path: Path) -> bool:
    """Whether ``path`` itself is one volume: a volume file, a zarr folder, or TIFF slices."""
    if path.is_file():
        return _volume_suffix(path.name) is not None
    if path.suffix.lower() == ".zarr" or _is_zarr_dir(path):
        return True
    return path.is_dir() and _is_slice_folder(path)


def _volume_entries(folder: Path) -> list[tuple[str, Path]]:
    """(stem, path) of every volume directly in ``folder``, natural order."""
    return [(_stem(p.name), p) for p in _children(folder) if _is_volume(p)]


def _check_unique(sources: Sequence[SourceSpec]) -> None:
    seen: dict[str, Path] = {}
    for spec in sources:
        if spec.id in seen:
            raise NoVolumeFound(
                f"two sources get the id {spec.id!r}: {seen[spec.id]} and {spec.image}; "
                f"expected unique names (ids keep only A-Z, a-z, 0-9, '_' and '-'); rename one"
            )
        seen[spec.id] = spec.image


def _files_seen(root: Path) -> str:
    """``'12 files seen under it (.png: 10, .txt: 2)'``, counting at most ``_COUNT_LIMIT``."""
    suffixes: Counter[str] = Counter()
    for n, (_, _, files) in enumerate(os.walk(root)):
        suffixes.update(Path(f).suffix.lower() or "(none)" for f in files)
        if n > _COUNT_LIMIT or suffixes.total() > _COUNT_LIMIT:
            break
    count = suffixes.total()
    shown = ", ".join(f"{s}: {c}" for s, c in suffixes.most_common(5))
    more = "+" if count > _COUNT_LIMIT else ""
    return f"{count}{more} files seen under it{f' ({shown})' if shown else ''}"


def _nothing_found(root: Path) -> str:
    """An error message naming the path, what files it holds and every layout tried."""
    if root.is_file():
        return (
            f"{root}: not a volume; expected a file ending in one of "
            f"{', '.join(VOLUME_SUFFIXES)}, a zarr folder or a folder of TIFF slices"
        )
    return f"{root}: no volumes found; {_files_seen(root)}. Tried: {_TRIED}"


def _read_classes(
    class_csv: Path | ClassTable | None, names: Iterable[str]
) -> tuple[ClassTable | None, tuple[str, ...]]:
    if class_csv is None:
        return None, ()
    if isinstance(class_csv, ClassTable):  # one table for several sources: rows of the others
        missing = sorted(set(names) - set(class_csv.classes))
        if missing:
            raise BadLabels(
                f"{class_csv.path}: samples without a row: {', '.join(missing)}; expected "
                "one row per sample"
            )
        return class_csv, class_csv.class_names
    table = read_class_csv(class_csv, samples=list(names))
    return table, table.class_names


# --- copick -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Copick:
    """Where a copick project's runs are: ``bases`` are its ``ExperimentRuns`` folders."""

    root: Path  # the project's folder (its config's)
    config: Path | None
    bases: tuple[Path, ...]


def _copick_project(path: Path) -> _Copick | None:
    """The copick project at ``path``: a folder (``copick_config.json`` and/or ``[static/,
    overlay/]ExperimentRuns``) or a copick config file of any name, whose ``static_root`` and
    ``overlay_root`` (``local://`` URLs or paths, relative to the config's folder) say where the
    runs are, besides that layout beside it; None if ``path`` is neither."""
    if path.is_file():
        if path.suffix.lower() != ".json" or not _is_copick_config(path):
            return None
        root, config = path.parent, path
    elif path.is_dir():
        root, config = path, _optional(path / COPICK_CONFIG)
    else:
        return None
    beside = [root / "static", root, root / "overlay"]
    if config is None and not any((b / "ExperimentRuns").is_dir() for b in beside):
        return None
    named = _config_bases(config) if config is not None else ()
    # The config's roots, then the layout beside it (what configs without roots mean)
    bases = [*named, *(b for b in beside if b not in named)]
    return _Copick(root, config, tuple(b / "ExperimentRuns" for b in bases))


def copick_project(path: str | Path) -> bool:
    """Whether ``path`` is a copick project (a folder, or a config of any name)."""
    return _copick_project(Path(path).expanduser()) is not None


def copick_config(path: str | Path) -> Path | None:
    """The config file of the copick project at ``path`` (a folder, or a config of any name);
    None where there is none."""
    project = _copick_project(Path(path).expanduser())
    return None if project is None else project.config


def _is_copick_config(path: Path) -> bool:
    try:
        doc = _load_json(path)
    except (BadLabels, OSError):
        return False
    return isinstance(doc, dict) and "pickable_objects" in doc


def _config_bases(config: Path) -> tuple[Path, ...]:
    """The folders a config's ``static_root`` and ``overlay_root`` name."""
    doc = _load_json(config)
    roots = {k: doc[k] for k in ("static_root", "overlay_root") if isinstance(doc.get(k), str)}
    if "static_root" not in roots and doc.get("config_type") == "cryoet_data_portal":
        raise NoVolumeFound(
            f"{config}: config_type 'cryoet_data_portal' reads its tomograms from the CZ cryoET "
            f"Data Portal; streamvol reads local files: download the runs into a local copick "
            f"project (static_root) and name that project's config"
        )
    found: list[Path] = []
    for key, value in roots.items():
        scheme, sep, rest = value.partition("://")
        if sep and scheme not in ("local", "file"):
            raise NoVolumeFound(
                f"{config}: {key} {value!r}: streamvol reads local copick projects (a path or "
                f"local://); copy the project to this machine"
            )
        folder = Path(rest if sep else value).expanduser()
        folder = folder if folder.is_absolute() else config.parent / folder
        if not folder.is_dir():
            if key == "overlay_root" and "static_root" in roots:
                continue  # no picks written yet (copick makes the overlay on first write)
            raise NoVolumeFound(f"{config}: {key} {value!r} is not a folder ({folder})")
        if folder not in found:
            found.append(folder)
    return tuple(found)


def _spacing(name: str) -> float | None:
    return _float(name[len(_SPACING_PREFIX) :]) if name.startswith(_SPACING_PREFIX) else None


def _float(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _choose_spacing(run: str, run_dirs: list[Path], wanted: float | None) -> list[Path]:
    """The ``VoxelSpacing*`` folders of ``run`` (static and overlay) at the chosen spacing."""
    by_spacing: dict[float, list[Path]] = {}
    for d in run_dirs:
        for child in _children(d):
            value = _spacing(child.name)
            if value is not None and child.is_dir():
                key = next((k for k in by_spacing if math.isclose(k, value, abs_tol=1e-3)), value)
                by_spacing.setdefault(key, []).append(child)
    where = " and ".join(str(d) for d in run_dirs)
    if not by_spacing:
        raise NoVolumeFound(
            f"copick run {run!r}: no {_SPACING_PREFIX}<s> folder in {where}; "
            f"expected {_SPACING_PREFIX}<s>/<tomogram>.zarr"
        )
    available = ", ".join(f"{v:g}" for v in sorted(by_spacing))
    if wanted is not None:
        for value, dirs in by_spacing.items():
            if math.isclose(value, wanted, abs_tol=1e-3):
                return dirs
        raise NoVolumeFound(
            f"copick run {run!r}: no voxel spacing {wanted:g} in {where}; available: {available}"
        )
    if len(by_spacing) > 1:
        raise NoVolumeFound(
            f"copick run {run!r} has several voxel spacings ({available}) in {where}; "
            f"choose one with voxel_spacing (shard and predict --voxel-spacing)"
        )
    return next(iter(by_spacing.values()))


def _choose_tomogram(run: str, spacing_dirs: list[Path], wanted: str) -> Path:
    tomograms = [p for d in spacing_dirs for p in _children(d) if p.name.lower().endswith(".zarr")]
    want = _stem(wanted)
    named = [p for p in tomograms if _stem(p.name) == want]
    if named:
        return named[0]
    if len(tomograms) == 1:
        return tomograms[0]
    where = ", ".join(str(d) for d in spacing_dirs)
    found = ", ".join(p.name for p in tomograms) or "none"
    raise NoVolumeFound(
        f"copick run {run!r}: no tomogram {want!r} in {where}; found {found}; "
        f"choose one with tomogram (shard and predict --tomogram)"
    )


def _discover_copick(
    project: _Copick,
    tomogram: str,
    voxel_spacing: float | None,
    owners: tuple[Sequence[str], Sequence[str]] = ((), ()),
    segmentation: str | None = None,
) -> Dataset:
    root = project.root
    chosen = bool(owners[0] or owners[1])
    runs: dict[str, list[Path]] = {}
    for base in project.bases:
        for run_dir in _children(base):
            if run_dir.is_dir():
                runs.setdefault(run_dir.name, []).append(run_dir)
    if not runs:
        raise NoVolumeFound(
            f"{project.config or root}: a copick project without runs; looked for run folders "
            f"in {', '.join(str(b) for b in project.bases)}; {_files_seen(root)}"
        )
    sources = []
    left_out: dict[str, Counter[str]] = {}  # run -> owners of its pick files not chosen
    for run in sorted(runs, key=natural_key):
        run_dirs = runs[run]
        spacing_dirs = _choose_spacing(run, run_dirs, voxel_spacing)
        image = _choose_tomogram(run, spacing_dirs, tomogram)
        picks = [p for d in run_dirs for p in _children(d / "Picks") if _is_pick_file(p)]
        if chosen:
            picks, left_out[run] = _choose_picks(picks, *owners)
        mask = None
        if segmentation is not None:
            spacing = _spacing(image.parent.name)
            mask = _choose_segmentation(run, run_dirs, segmentation, spacing)
        sources.append(SourceSpec(id=source_id(run), image=image, mask=mask, picks=tuple(picks)))
    if segmentation is not None:
        sources = _runs_with_masks(root, segmentation, sources, runs)
    if chosen:
        _report_choice(root, owners, sources, left_out)
    weights: dict[str, float] = {}
    if project.config is not None:
        radii = read_copick_config(project.config)
        weights = {n: w for n, w in read_copick_weights(project.config).items() if n in radii}
        class_names = tuple(radii)
    else:
        # Without a config the pick files name the classes; radii stay unknown.
        names = {read_copick_picks(p, 1.0).class_names[0] for s in sources for p in s.picks}
        class_names, radii = tuple(sorted(names)), {}
    mask_names = _mask_names(project, _seg_uri(segmentation)[0], sources) if segmentation else ()
    return Dataset(root, "copick", tuple(sources), class_names, radii, chosen, mask_names, weights)


def _segmentation_header(path: Path) -> tuple[float, str, str, str, bool] | None:
    """Voxel spacing, user_id, session_id, name and whether multilabel, from a copick
    segmentation's name, ``<spacing>_<user>_<session>_<name>[-multilabel].zarr``; None when
    the name is not of that form."""
    if not path.name.lower().endswith(".zarr") or not path.is_dir():
        return None
    multilabel = is_multilabel(path)
    parts = path.name[: -len(".zarr")].removesuffix(_MULTILABEL).split("_", 3)
    if len(parts) < 4:
        return None
    spacing = _float(parts[0])
    return None if spacing is None else (spacing, parts[1], parts[2], parts[3], multilabel)


def is_multilabel(path: str | Path) -> bool:
    """Whether a copick segmentation is multilabel (its values the config's object labels),
    as its name says: ``...-multilabel.zarr``."""
    return Path(path).name.endswith(f"{_MULTILABEL}.zarr")


def _segmentations(
    run_dirs: Sequence[Path],
) -> list[tuple[Path, tuple[float, str, str, str, bool]]]:
    found = []
    for d in run_dirs:
        for path in _children(d / "Segmentations"):
            header = _segmentation_header(path)
            if header is not None:
                found.append((path, header))
    return found


def _seg_uri(uri: str) -> tuple[str, str | None, str | None]:
    """Name, user_id and session_id (None: any) of a copick segmentation URI,
    ``NAME[:USER_ID[/SESSION_ID]]``; its voxel spacing is the tomograms'."""
    if "@" in uri:
        raise BadLabels(
            f"segmentation {uri!r}: its voxel spacing is the tomograms' (shard --voxel-spacing); "
            f"expected NAME[:USER_ID[/SESSION_ID]]"
        )
    name, _, owner = uri.partition(":")
    user, _, session = owner.partition("/")
    return name, user or None, session or None


def _choose_segmentation(
    run: str, run_dirs: Sequence[Path], uri: str, spacing: float | None
) -> Path | None:
    """The segmentation ``uri`` of ``run`` at the tomogram's voxel spacing; None where there
    is none; several (owners) are refused, naming them."""
    name, user, session = _seg_uri(uri)
    found = [
        (path, (by, sid))
        for path, (at, by, sid, seg_name, _) in _segmentations(run_dirs)
        if seg_name == name
        and (spacing is None or math.isclose(at, spacing, abs_tol=1e-3))
        and user in (None, by)
        and session in (None, sid)
    ]
    if len(found) > 1:
        listed = "; ".join(f"{by}/{sid} ({path})" for path, (by, sid) in found)
        by, sid = found[0][1]
        raise BadLabels(
            f"copick run {run!r}: {len(found)} segmentations {uri!r} (user_id/session_id): "
            f"{listed}; choose whose as NAME:USER_ID[/SESSION_ID], e.g. --segmentation "
            f"{name}:{by}/{sid}"
        )
    return found[0][0] if found else None


def _runs_with_masks(
    root: Path, uri: str, sources: list[SourceSpec], runs: dict[str, list[Path]]
) -> list[SourceSpec]:
    """The runs that hold segmentation ``name``; none is refused, listing what the project
    holds; the others are left out with a ``MasksLeftOut`` warning."""
    import warnings

    kept = [s for s in sources if s.mask is not None]
    if not kept:
        held = sorted(
            {
                f"{seg}{' (multilabel)' * multi} at {at:g} by {user}/{session}"
                for dirs in runs.values()
                for _, (at, user, session, seg, multi) in _segmentations(dirs)
            }
        )
        raise BadLabels(
            f"{root}: no run holds a segmentation {uri!r} at the tomograms' voxel spacing; its "
            f"segmentations: {'; '.join(held) or 'none'} (in ExperimentRuns/<run>/Segmentations/"
            f"<spacing>_<user>_<session>_<name>[-multilabel].zarr)"
        )
    bare = [s.id for s in sources if s.mask is None]
    if bare:
        warnings.warn(
            f"{root}: copick run{'s' * (len(bare) > 1)} {', '.join(bare)} "
            f"{'have' if len(bare) > 1 else 'has'} no segmentation {uri!r}: left out",
            MasksLeftOut,
            stacklevel=4,
        )
    return kept


def _mask_names(project: _Copick, name: str, sources: Sequence[SourceSpec]) -> tuple[str, ...]:
    """The class of each label of the segmentations: background and ``name`` for binary ones;
    for multilabel ones, the config's objects by their ``label`` (none without a config)."""
    multi = {is_multilabel(s.mask) for s in sources if s.mask}
    if multi == {False}:
        return ("background", name)
    if len(multi) > 1:
        raise BadLabels(
            f"{project.root}: segmentation {name!r} is multilabel in some runs and binary in "
            f"others; expected one kind"
        )
    if project.config is None:
        return ()
    labels = read_copick_labels(project.config)
    top = max(labels, default=0)
    return ("background", *(labels.get(k, f"label {k}") for k in range(1, top + 1)))


def copick_picks(
    root: str | Path, *, user: str | None = None, session: str | None = None
) -> dict[str, dict[str, np.ndarray]]:
    """Every pick of a copick project in Angstrom: run -> particle type -> (N, 3) z, y, x.

    Reads ``[overlay/|static/]ExperimentRuns/<run>/Picks/*.json`` (no tomogram needed), each
    file's type from its ``pickable_object_name``; ``user`` and ``session`` keep only the files
    of that ``user_id`` / ``session_id``. Files of one run and type are joined; without
    ``user`` or ``session``, files of one type from several owners are refused (``BadLabels``).
    """
    root = Path(root).expanduser()
    project = _copick_project(root)
    if project is None:
        raise NoVolumeFound(
            f"{root}: not a copick project; expected a copick config (any name; "
            f"{COPICK_CONFIG} in a folder) or [overlay/]ExperimentRuns/<run>/Picks/*.json"
        )
    users = () if user is None else (user,)
    sessions = () if session is None else (session,)
    found: dict[str, dict[str, list[np.ndarray]]] = {}
    for base in project.bases:
        for run_dir in _children(base):
            files = [p for p in _children(run_dir / "Picks") if _is_pick_file(p)]
            if users or sessions:
                files = _choose_picks(files, users, sessions)[0]
            parts = [read_copick_picks(p, 1.0) for p in files]  # voxel size 1: Angstrom stay
            if not (users or sessions):
                _check_one_owner(run_dir.name, files, [len(p.zyx) for p in parts])
            for points in parts:
                kind = points.class_names[0]
                found.setdefault(run_dir.name, {}).setdefault(kind, []).append(points.zyx)
    return {
        run: {k: np.concatenate(v).reshape(-1, 3) for k, v in types.items()}
        for run, types in found.items()
    }


def _is_pick_file(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() == ".json"


def _pick_header(path: Path) -> tuple[str, str, str]:
    """A copick pick file's object name, ``user_id`` and ``session_id`` ("?" where missing)."""
    doc = _load_json(path)
    if not isinstance(doc, dict):
        raise BadLabels(f"{path}: expected a copick pick object, got {type(doc).__name__}")
    name, user, session = (
        "?" if doc.get(k) is None else str(doc[k])
        for k in ("pickable_object_name", "user_id", "session_id")
    )
    return name, user, session


def _choose_picks(
    files: Sequence[Path], users: Sequence[str], sessions: Sequence[str]
) -> tuple[list[Path], Counter[str]]:
    """The pick files of any of ``users`` and ``sessions`` (all where none is given), and the
    owners of those left out."""
    kept: list[Path] = []
    left_out: Counter[str] = Counter()
    for path in files:
        _, user, session = _pick_header(path)
        if (not users or user in users) and (not sessions or session in sessions):
            kept.append(path)
        else:
            left_out[f"{user}/{session}"] += 1
    return kept, left_out


def _report_choice(
    root: Path,
    owners: tuple[Sequence[str], Sequence[str]],
    sources: Sequence[SourceSpec],
    left_out: dict[str, Counter[str]],
) -> None:
    """Refuse a choice of pick owners that keeps no file; warn of runs it leaves without picks."""
    import warnings

    named = zip(("user_id", "session_id"), owners, strict=True)
    chosen = " and ".join(f"{key} {', '.join(values)}" for key, values in named if values)
    if not any(s.picks for s in sources):
        found = sum(left_out.values(), Counter())
        listed = ", ".join(f"{o} ({n} file{'s' * (n != 1)})" for o, n in sorted(found.items()))
        raise BadLabels(
            f"{root}: no pick file of {chosen}; its pick files (user_id/session_id): "
            f"{listed or 'none'}"
        )
    bare = [s.id for s in sources if not s.picks and left_out.get(s.id)]
    if bare:
        others = sorted({o for run in bare for o in left_out[run]})
        warnings.warn(
            f"{root}: copick run{'s' * (len(bare) > 1)} {', '.join(bare)} "
            f"{'have' if len(bare) > 1 else 'has'} no pick file of {chosen} (only "
            f"{', '.join(others)}): no crops on picks there, and detection takes it all as "
            f"background",
            PicksLeftOut,
            stacklevel=4,
        )


def _check_one_owner(run: str, files: Sequence[Path], counts: Sequence[int]) -> None:
    """Refuse to join the picks of one type that several users or sessions made (curation and
    a model's predictions, two annotators) unless the caller chose them by owner. Empty files
    (a picker that found none of a type) add nothing to a join and are not counted."""
    held: dict[str, dict[tuple[str, str], tuple[int, Path]]] = {}
    for path, count in zip(files, counts, strict=True):
        if not count:
            continue
        name, user, session = _pick_header(path)
        of_type = held.setdefault(name, {})
        of_type[user, session] = (of_type.get((user, session), (0, path))[0] + count, path)
    for name, by_owner in held.items():
        if len(by_owner) > 1:
            listed = "; ".join(
                f"{user}/{session}: {n} pick{'s' * (n != 1)} ({path})"
                for (user, session), (n, path) in by_owner.items()
            )
            first_user, first_session = next(iter(by_owner))
            if len({user for user, _ in by_owner}) > 1:
                how = f"user_id, e.g. {first_user!r} (shard --user-id, score --user, --ref-user)"
            else:  # one user's sessions (the data portal's annotations, a tool's runs)
                how = (
                    f"session_id, e.g. {first_session!r} (shard --session-id, score --session, "
                    f"--ref-session)"
                )
            raise BadLabels(
                f"copick run {run!r}: picks of {name!r} from {len(by_owner)} owners (user_id/"
                f"session_id): {listed}; choose whose by {how}, or name several to join them"
            )


# --- sample folders -----------------------------------------------------------------------------


def _folder_volume(folder: Path) -> Path:
    """The volume held by a sample's ``raw/`` or ``mask/``: TIFF slices, a zarr, or one file."""
    if _is_volume(folder):
        return folder
    entries = _volume_entries(folder)
    if len(entries) == 1:
        return entries[0][1]
    found = ", ".join(p.name for _, p in entries[:5]) or f"no volume among {len(_children(folder))}"
    raise NoVolumeFound(
        f"{folder}: expected one volume (a folder of 2D TIFF slices, a zarr, or one file ending "
        f"in {', '.join(VOLUME_SUFFIXES)}), found {len(entries)}: {found}"
    )


def _discover_samples(
    root: Path, sample_dirs: list[Path], class_csv: Path | ClassTable | None
) -> Dataset:
    table, class_names = _read_classes(class_csv, (d.name for d in sample_dirs))
    sources = []
    for d in sample_dirs:
        mask = _folder_volume(d / "mask") if (d / "mask").is_dir() else None
        sources.append(
            SourceSpec(
                id=source_id(d.name),
                image=_folder_volume(d / "raw"),
                mask=mask,
                class_name=table.name_of(d.name) if table else None,
            )
        )
    return Dataset(root, "samples", tuple(sources), class_names, {})


# --- volumes ------------------------------------------------------------------------------------


def _discover_volumes(
    root: Path, folder: Path, entries: list[tuple[str, Path]], class_csv: Path | ClassTable | None
) -> Dataset:
    """Sources from the volumes ``entries`` of ``folder``; masks and spot tables attach by stem."""
    stems = {stem for stem, _ in entries}
    masks: dict[str, Path] = {}
    images = []
    for stem, p in entries:
        base = stem.removesuffix(_MASK_SUFFIX)
        if base != stem and base in stems:
            masks[base] = p
        elif base != stem and p != root:  # a mask given as the path is taken as an image
            raise BadLabels(f"{p}: a mask without its image {base}.<suffix> beside it")
        else:
            images.append((stem, p))
    table, class_names = _read_classes(class_csv, (stem for stem, _ in images))
    sources = [
        SourceSpec(
            id=source_id(stem),
            image=p,
            mask=masks.get(stem),
            spots=_optional(folder / f"{stem}.csv"),
            class_name=table.name_of(stem) if table else None,
        )
        for stem, p in images
    ]
    spot_names = _spot_class_names([s.spots for s in sources if s.spots is not None], table)
    return Dataset(root, "volumes", tuple(sources), class_names or spot_names, {})


def _spot_class_names(tables: list[Path], classes: ClassTable | None) -> tuple[str, ...]:
    """Class names shared by all spot tables, so one label means one id in every volume."""
    per_table = [read_spot_table(p) for p in tables]
    if classes is not None:
        labelled = [p.source for p in per_table if p.class_names != ("spot",)]
        if labelled:
            raise BadLabels(
                f"{labelled[0]}: spot labels beside the per-sample classes of {classes.path}; "
                f"expected one or the other (drop the label column or the class CSV)"
            )
        return ()
    names = {n for p in per_table for n in p.class_names}
    if names and all(n.isdecimal() for n in names):
        return tuple(str(i) for i in range(max(int(n) for n in names) + 1))
    return tuple(sorted(names))
