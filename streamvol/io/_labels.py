"""Label readers: class CSVs per sample, copick picks and configs, spot tables.

Every reader returns plain numpy / Python values and raises ``BadLabels`` naming the file, the
row or point, the value and what was expected. Point coordinates come back as (z, y, x) in voxels
of the volume they belong to; copick picks (Angstrom) are converted with its voxel size.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from streamvol.errors import BadInput, BadLabels, PointsOutsideVolume

_ID_COLUMNS = ("sample", "sample_id", "id", "name")
_CLASS_COLUMNS = ("class", "label", "class_name")
_SPOT_LABEL_COLUMNS = ("label", "class")
_ANGSTROM_UNITS = {"angstrom", "angstroms", "a", "å", "\u212b"}
_NANOMETER_UNITS = {"nanometer", "nanometers", "nanometre", "nanometres", "nm"}
_SHOW = 5  # how many offending ids an error message lists


def _listing(items: Sequence[Any]) -> str:
    """``'a', 'b', 'c' and 4 more (7 in all)``: first few items and the count."""
    shown = ", ".join(repr(i) for i in items[:_SHOW])
    if len(items) > _SHOW:
        return f"{shown} and {len(items) - _SHOW} more ({len(items)} in all)"
    return shown


@dataclass(frozen=True)
class Points:
    """Labelled points of one volume.

    ``zyx`` is (N, 3) float64 in voxels of the opened volume, ``labels`` (N,) int64 indexes
    ``class_names``; ``source`` names the file(s) the points came from, for error messages.
    """

    zyx: np.ndarray
    labels: np.ndarray
    class_names: tuple[str, ...]
    source: str

    def __post_init__(self) -> None:
        zyx = np.asarray(self.zyx, dtype=np.float64).reshape(-1, 3)
        labels = np.asarray(self.labels, dtype=np.int64).reshape(-1)
        if len(labels) != len(zyx):
            raise BadLabels(f"{self.source}: {len(zyx)} points but {len(labels)} labels")
        if len(labels) and (labels.min() < 0 or labels.max() >= len(self.class_names)):
            raise BadLabels(
                f"{self.source}: labels must index class_names {self.class_names}, "
                f"got ids {int(labels.min())}..{int(labels.max())}"
            )
        object.__setattr__(self, "zyx", zyx)
        object.__setattr__(self, "labels", labels)
        object.__setattr__(self, "class_names", tuple(self.class_names))

    def __len__(self) -> int:
        return len(self.labels)

    def by_name(self, voxel_size: Sequence[float] | None = None) -> dict[str, np.ndarray]:
        """(N, 3) z, y, x of each class present, times ``voxel_size`` where given (voxels to
        Angstrom)."""
        scale = np.ones(3) if voxel_size is None else np.asarray(voxel_size, np.float64)
        return {
            name: self.zyx[self.labels == i] * scale
            for i, name in enumerate(self.class_names)
            if (self.labels == i).any()
        }

    def check_inside(self, shape: Sequence[int], volume_path: str | Path) -> None:
        """Raise ``PointsOutsideVolume`` unless every point lies in a volume of ``shape``.

        A point is inside when each coordinate is in ``[-0.5, size)``: that accepts points valid
        under either convention (integer = voxel centre, or voxel i spanning [i, i+1)), so only a
        real mismatch (wrong voxel size, wrong run, wrong axis order) is reported.
        """
        size = np.asarray(tuple(shape), dtype=np.float64)
        if size.shape != (3,):
            raise BadInput(f"{volume_path}: expected a 3D shape (z, y, x), got {tuple(shape)}")
        inside = np.isfinite(self.zyx).all(axis=1)
        inside &= ((self.zyx >= -0.5) & (self.zyx < size)).all(axis=1)
        bad = np.flatnonzero(~inside)
        if len(bad):
            i = int(bad[0])
            z, y, x = (float(v) for v in self.zyx[i])
            raise PointsOutsideVolume(
                f"{self.source}: point {i} at (z, y, x) = ({z:.2f}, {y:.2f}, {x:.2f}) voxels lies "
                f"outside volume {volume_path} of shape {tuple(int(s) for s in shape)} "
                f"({len(bad)} of {len(self)} points outside); check the voxel size and that the "
                f"picks belong to this volume"
            )

    @classmethod
    def concat(cls, parts: Sequence[Points], class_names: Sequence[str] | None = None) -> Points:
        """Join the points of several files (e.g. one pick file per particle of a run).

        Labels are remapped by name onto ``class_names`` (default: the sorted union of the
        parts' names); a part naming a class outside ``class_names`` raises ``BadLabels``.
        """
        if class_names is None:
            names = tuple(sorted({n for p in parts for n in p.class_names}))
        else:
            names = tuple(class_names)
        index = {n: i for i, n in enumerate(names)}
        labels = []
        for part in parts:
            unknown = [n for n in part.class_names if n not in index]
            if unknown:
                raise BadLabels(
                    f"{part.source}: classes {_listing(unknown)} are not among the known classes "
                    f"{list(names)}"
                )
            remap = np.array([index[n] for n in part.class_names], dtype=np.int64)
            labels.append(remap[part.labels] if len(part) else part.labels)
        return cls(
            zyx=np.concatenate([p.zyx for p in parts]) if parts else np.zeros((0, 3)),
            labels=np.concatenate(labels) if parts else np.zeros(0, dtype=np.int64),
            class_names=names,
            source=", ".join(p.source for p in parts),
        )


# --- class CSV --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClassTable:
    """One class per sample: ``classes`` maps sample id -> class id indexing ``class_names``."""

    classes: dict[str, int]
    class_names: tuple[str, ...]
    path: Path

    def name_of(self, sample: str) -> str:
        """The class name of ``sample``."""
        return self.class_names[self.classes[sample]]


def _read_rows(path: Path) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """Header (stripped, lower case) and the (line number, cells) of each non-blank data row."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            rows = [(reader.line_num, row) for row in reader if any(c.strip() for c in row)]
    except FileNotFoundError:
        raise
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise BadLabels(f"{path}: not a readable CSV file: {exc}") from exc
    if header is None or not any(c.strip() for c in header):
        raise BadLabels(f"{path}: empty file; expected a CSV with a header row")
    return [c.strip().lower() for c in header], rows


def _column(header: list[str], choices: Sequence[str]) -> int | None:
    """Index of the first of ``choices`` present in ``header``, or None."""
    for name in choices:
        if name in header:
            return header.index(name)
    return None


def _cell(row: list[str], col: int) -> str:
    return row[col].strip() if col < len(row) else ""


def read_class_csv(path: str | Path, samples: Iterable[str] | None = None) -> ClassTable:
    """Read a CSV giving one class per sample, checked against ``samples`` when given.

    The id column is the first of ``sample``, ``sample_id``, ``id``, ``name``; the class column
    the first of ``class``, ``label``, ``class_name``. Class ids follow sorted class names, so they
    do not depend on row order.
    """
    path = Path(path)
    header, rows = _read_rows(path)
    id_col = _column(header, _ID_COLUMNS)
    cls_col = _column(header, _CLASS_COLUMNS)
    if id_col is None or cls_col is None:
        missing = [
            f"an id column (one of {', '.join(_ID_COLUMNS)})" if id_col is None else "",
            f"a class column (one of {', '.join(_CLASS_COLUMNS)})" if cls_col is None else "",
        ]
        raise BadLabels(
            f"{path}: expected {' and '.join(m for m in missing if m)} in the header, "
            f"got columns {header}"
        )
    if not rows:
        raise BadLabels(f"{path}: header only; expected one row per sample")
    by_sample: dict[str, str] = {}
    first_line: dict[str, int] = {}
    duplicates: list[str] = []
    for line, row in rows:
        sample, name = _cell(row, id_col), _cell(row, cls_col)
        if not sample or not name:
            raise BadLabels(
                f"{path}: row {line} has an empty {'id' if not sample else 'class'} cell "
                f"({row}); expected a sample id and a class on every row"
            )
        if sample in by_sample:
            duplicates.append(f"{sample} (rows {first_line[sample]} and {line})")
            continue
        by_sample[sample] = name
        first_line[sample] = line
    if duplicates:
        raise BadLabels(
            f"{path}: duplicate sample ids {_listing(duplicates)}; expected one row per sample"
        )
    if samples is not None:
        known = set(samples)
        unknown = sorted(set(by_sample) - known)
        unlabelled = sorted(known - set(by_sample))
        problems = []
        if unknown:
            problems.append(f"rows name samples that do not exist: {_listing(unknown)}")
        if unlabelled:
            problems.append(f"samples without a row: {_listing(unlabelled)}")
        if problems:
            raise BadLabels(
                f"{path}: {'; '.join(problems)}; expected exactly one row per sample "
                f"({len(known)} samples found)"
            )
    class_names = tuple(sorted(set(by_sample.values())))
    index = {n: i for i, n in enumerate(class_names)}
    return ClassTable({s: index[n] for s, n in by_sample.items()}, class_names, path)


# --- copick -----------------------------------------------------------------------------------


def _load_json(path: Path) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadLabels(f"{path}: not a readable JSON file: {exc}") from exc


def _number(value: Any) -> float:
    """A finite float from a JSON number; ``BadLabels`` otherwise (bools and strings included);
    the caller adds the file."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise BadLabels(f"expected a number, got {value!r}")
    if not math.isfinite(value):
        raise BadLabels(f"expected a finite number, got {value!r}")
    return float(value)


def _voxel_size_zyx(voxel_size: Any, path: Path) -> np.ndarray:
    if voxel_size is None:
        raise BadLabels(
            f"{path}: copick picks are in Angstrom and need the tomogram's voxel size to become "
            f"voxels, but the tomogram has none; expected a volume with a voxel size (OME-Zarr "
            f"scale, MRC header) or one given explicitly"
        )
    size = np.broadcast_to(np.asarray(voxel_size, dtype=np.float64), (3,))
    if not (np.isfinite(size).all() and (size > 0).all()):
        raise BadLabels(f"{path}: expected a positive voxel size (z, y, x), got {voxel_size!r}")
    return size


def _pick_location(point: Any) -> tuple[float, float, float]:
    """(z, y, x) in the file's unit: location plus the translation of ``transformation_``."""
    if not isinstance(point, dict):
        raise BadLabels(f"expected an object with a 'location', got {point!r}")
    loc = point.get("location")
    if not isinstance(loc, dict):
        raise BadLabels(f"expected 'location': {{'x', 'y', 'z'}}, got {loc!r}")
    missing = [a for a in "xyz" if a not in loc]
    if missing:
        raise BadLabels(f"location lacks {', '.join(missing)}: {loc!r}")
    zyx = [_number(loc[a]) for a in "zyx"]
    transform = point.get("transformation_")
    if transform is not None:
        try:
            matrix = np.array(transform, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise BadLabels(f"expected a 4x4 numeric transformation_, got {transform!r}") from exc
        if matrix.shape != (4, 4) or not np.isfinite(matrix).all():
            raise BadLabels(f"expected a 4x4 numeric transformation_, got {transform!r}")
        zyx = [zyx[0] + matrix[2, 3], zyx[1] + matrix[1, 3], zyx[2] + matrix[0, 3]]
    return (zyx[0], zyx[1], zyx[2])


def read_copick_picks(
    path: str | Path,
    voxel_size: tuple[float, float, float] | float | None,
    class_names: Sequence[str] | None = None,
) -> Points:
    """Read a copick pick file and convert its Angstrom locations to voxels (z, y, x).

    Each point's location plus the translation of its ``transformation_`` is divided by the
    tomogram's ``voxel_size`` (z, y, x, Angstrom). The class id is the object's index in
    ``class_names`` when given (so every file of a project shares ids), else 0.
    """
    path = Path(path)
    doc = _load_json(path)
    if not isinstance(doc, dict):
        raise BadLabels(f"{path}: expected a copick pick object, got {type(doc).__name__}")
    name = doc.get("pickable_object_name")
    if not isinstance(name, str) or not name:
        raise BadLabels(f"{path}: expected a 'pickable_object_name' string, got {name!r}")
    unit = doc.get("unit") or "angstrom"
    unit_key = str(unit).strip().lower()
    if unit_key in _ANGSTROM_UNITS:
        factor = 1.0
    elif unit_key in _NANOMETER_UNITS:
        factor = 10.0
    else:
        raise BadLabels(f"{path}: unknown unit {unit!r}; expected 'angstrom' or 'nanometer'")
    if class_names is None:
        names: tuple[str, ...] = (name,)
    else:
        names = tuple(class_names)
        if name not in names:
            raise BadLabels(
                f"{path}: object {name!r} is not a known class; expected one of {list(names)}"
            )
    size = _voxel_size_zyx(voxel_size, path)
    points = doc.get("points")
    if not isinstance(points, list):
        got = "null" if points is None else type(points).__name__
        if "points" not in doc:
            got = "no 'points' key"
        raise BadLabels(f"{path}: expected 'points' to be a list of picks ([] for none), got {got}")
    zyx = np.zeros((len(points), 3), dtype=np.float64)
    for i, point in enumerate(points):
        try:
            zyx[i] = _pick_location(point)
        except BadLabels as exc:
            raise BadLabels(f"{path}: point {i} is malformed: {exc}") from None
    return Points(
        zyx=zyx * factor / size,
        labels=np.full(len(points), names.index(name), dtype=np.int64),
        class_names=names,
        source=str(path),
    )


def read_copick_config(path: str | Path) -> dict[str, float]:
    """Particle name -> radius (Angstrom) from a ``copick_config.json``, sorted by name.

    The order of the mapping is the order of class ids. Objects with ``is_particle: false``
    (membranes and other segmentation-only objects) carry no picks and are left out.
    """
    path = Path(path)
    doc = _load_json(path)
    objects = doc.get("pickable_objects") if isinstance(doc, dict) else None
    if not isinstance(objects, list):
        raise BadLabels(f"{path}: expected a 'pickable_objects' list in the copick config")
    radii: dict[str, float] = {}
    for i, obj in enumerate(objects):
        if not isinstance(obj, dict) or not isinstance(obj.get("name"), str) or not obj["name"]:
            raise BadLabels(f"{path}: pickable object {i} has no 'name' string: {obj!r}")
        name = obj["name"]
        if obj.get("is_particle", True) is False:
            continue
        if name in radii:
            raise BadLabels(
                f"{path}: pickable object {name!r} appears twice; expected unique names"
            )
        try:
            radius = _number(obj.get("radius"))
        except BadLabels:
            radius = -1.0
        if radius <= 0:
            raise BadLabels(
                f"{path}: particle {name!r} has radius {obj.get('radius')!r}; "
                f"expected a positive number of Angstrom"
            )
        radii[name] = radius
    return dict(sorted(radii.items()))


def read_copick_labels(path: str | Path) -> dict[int, str]:
    """Label -> object name from a ``copick_config.json``: the values of its multilabel
    segmentations, particles and other objects (membranes) alike; objects without a ``label``
    are left out, a label given twice is refused."""
    path = Path(path)
    read_copick_config(path)  # refuses a config without objects or names
    labels: dict[int, str] = {}
    for obj in _load_json(path)["pickable_objects"]:
        label = obj.get("label")
        if label is None:
            continue
        if not isinstance(label, int) or isinstance(label, bool) or label < 1:
            raise BadLabels(
                f"{path}: object {obj['name']!r} has label {label!r}; expected an integer >= 1 "
                f"(0 is the background of multilabel segmentations)"
            )
        if label in labels:
            raise BadLabels(
                f"{path}: objects {labels[label]!r} and {obj['name']!r} share label {label}; "
                f"expected one object a label"
            )
        labels[label] = obj["name"]
    return dict(sorted(labels.items()))


def read_copick_weights(path: str | Path) -> dict[str, float]:
    """Particle name -> score weight, for the objects of a ``copick_config.json`` that carry a
    numeric ``weight`` (not part of the copick schema; the CZII metric's weights live there
    when a project records them). Objects without one are left out."""
    path = Path(path)
    doc = _load_json(path)
    objects = doc.get("pickable_objects") if isinstance(doc, dict) else None
    weights: dict[str, float] = {}
    for obj in objects if isinstance(objects, list) else []:
        if isinstance(obj, dict) and isinstance(obj.get("name"), str) and "weight" in obj:
            try:
                weight = _number(obj["weight"])
            except BadLabels:
                weight = -1.0
            if weight < 0:
                raise BadLabels(
                    f"{path}: particle {obj['name']!r} has weight {obj['weight']!r}; "
                    f"expected a number >= 0"
                )
            weights[obj["name"]] = weight
    return weights


# --- picks tables (the CZII submission layout) -------------------------------------------------

PICK_COLUMNS = ("experiment", "particle_type", "x", "y", "z")


def read_picks_table(path: str | Path) -> dict[str, dict[str, np.ndarray]]:
    """Read a CSV of picks with columns ``experiment, particle_type, x, y, z`` (Angstrom; other
    columns such as ``id`` or ``score`` are ignored) as experiment -> type -> (N, 3) z, y, x."""
    path = Path(path)
    header, rows = _read_rows(path)
    missing = [c for c in PICK_COLUMNS if c not in header]
    if missing:
        raise BadLabels(
            f"{path}: expected columns {', '.join(PICK_COLUMNS)} in the header, missing "
            f"{', '.join(missing)}; got columns {header}"
        )
    cols = {c: header.index(c) for c in PICK_COLUMNS}
    found: dict[str, dict[str, list[tuple[float, float, float]]]] = {}
    for line, row in rows:
        exp, kind = _cell(row, cols["experiment"]), _cell(row, cols["particle_type"])
        if not exp or not kind:
            raise BadLabels(f"{path}: row {line} has an empty experiment or particle_type cell")
        xyz = []
        for axis in "xyz":
            text = _cell(row, cols[axis])
            try:
                value = float(text)
            except ValueError:
                value = math.nan
            if not math.isfinite(value):
                raise BadLabels(
                    f"{path}: row {line}: {axis} = {text!r}; expected a finite number of Angstrom"
                )
            xyz.append(value)
        found.setdefault(exp, {}).setdefault(kind, []).append((xyz[2], xyz[1], xyz[0]))
    return {
        exp: {k: np.asarray(v, np.float64).reshape(-1, 3) for k, v in types.items()}
        for exp, types in found.items()
    }


# --- spot tables ------------------------------------------------------------------------------


def _integer_names(names: Iterable[str]) -> dict[str, int] | None:
    """Label text -> int when every label is a non-negative integer, else None."""
    out = {}
    for n in names:
        try:
            value = int(n)
        except ValueError:
            return None
        if value < 0:
            return None
        out[n] = value
    return out


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _check_spot_labels(
    path: Path, column: str, rows: Sequence[tuple[int, list[str]]], texts: Sequence[str]
) -> None:
    """Labels are either all class ids (integers >= 0) or all names: a number that is no id
    (``1.5``, ``-1``) or a name among ids (``cat`` among ``0`` and ``1``) is refused by row."""
    is_id = [_integer_names([t]) is not None for t in texts]
    if all(is_id):
        return
    lines = [line for line, _ in rows]
    for line, text, ok in zip(lines, texts, is_id, strict=True):
        if not ok and _is_number(text):
            raise BadLabels(
                f"{path}: row {line}: {column} = {text!r}; expected a class id (an integer "
                ">= 0) or a class name"
            )
    if any(is_id):
        first = is_id.index(True)
        bad = is_id.index(False)
        raise BadLabels(
            f"{path}: row {lines[bad]}: {column} = {texts[bad]!r} among class ids (row "
            f"{lines[first]}: {texts[first]!r}); expected every label a class id (an integer "
            ">= 0) or every label a name"
        )


def read_spot_table(path: str | Path) -> Points:
    """Read a CSV of spots: columns ``z, y, x`` (voxels) and an optional ``label``/``class``.

    Integer labels are class ids themselves (names "0".."max"); text labels get ids in sorted
    name order; without a label column every spot is class 0, named "spot".
    """
    path = Path(path)
    header, rows = _read_rows(path)
    missing = [a for a in "zyx" if a not in header]
    if missing:
        raise BadLabels(
            f"{path}: expected columns z, y, x in the header, missing {', '.join(missing)}; "
            f"got columns {header}"
        )
    cols = [header.index(a) for a in "zyx"]
    label_col = _column(header, _SPOT_LABEL_COLUMNS)
    zyx = np.zeros((len(rows), 3), dtype=np.float64)
    texts = []
    for i, (line, row) in enumerate(rows):
        for j, (axis, col) in enumerate(zip("zyx", cols, strict=True)):
            value = _cell(row, col)
            try:
                zyx[i, j] = float(value)
            except ValueError:
                zyx[i, j] = math.nan
            if not math.isfinite(zyx[i, j]):
                raise BadLabels(
                    f"{path}: row {line}: {axis} = {value!r}; expected a finite number of voxels"
                )
        if label_col is not None:
            text = _cell(row, label_col)
            if not text:
                raise BadLabels(f"{path}: row {line}: empty {header[label_col]} cell")
            texts.append(text)
    if label_col is None:
        return Points(zyx, np.zeros(len(rows), np.int64), ("spot",), str(path))
    _check_spot_labels(path, header[label_col], rows, texts)
    as_int = _integer_names(texts)
    if as_int is not None:
        top = max(as_int.values(), default=-1)
        names = tuple(str(i) for i in range(top + 1))
        labels = np.array([as_int[t] for t in texts], dtype=np.int64)
    else:
        names = tuple(sorted(set(texts)))
        index = {n: i for i, n in enumerate(names)}
        labels = np.array([index[t] for t in texts], dtype=np.int64)
    return Points(zyx, labels, names, str(path))
