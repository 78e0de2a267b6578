"""Write one shard: read each planned crop from its lazily opened source, pack a WebDataset tar.

A shard task holds one shard's samples in memory at most, never a volume. The tar is written
under ``<name>.partial``, fsynced and renamed, so a crash never leaves a complete-looking shard.
Members are byte-for-byte deterministic (fixed mtime, owner and order) so a rerun can compare
sha256 values.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import math
import tarfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from streamvol.core.files import atomic_file
from streamvol.core.geometry import inside
from streamvol.errors import BadInput, BadLabels
from streamvol.io import Volume
from streamvol.shard.manifest import Summary, checked_summary, member_checksum
from streamvol.shard.plan import Crop, crop_box
from streamvol.shard.regions import Tile

MTIME = 946684800  # 2000-01-01: fixed so identical content gives identical bytes


@dataclass(frozen=True)
class ShardSource:
    """What a shard task needs of one source; pickles small (volumes are lazy)."""

    id: str
    image: Volume
    mask: Volume | None = None
    points: np.ndarray | None = None  # (N, 4) float32: z, y, x voxels, class id


@dataclass(frozen=True)
class Encoding:
    """How crops are stored: context margin, edge padding, and dtype conversion."""

    crop: tuple[int, int, int]
    margin: tuple[int, int, int]
    pad: str = "reflect"  # "reflect" | "zero"
    dtype: str = "keep"  # "keep" | "float16" | "uint8"
    low: float = 0.0  # uint8 scaling: low -> 0, high -> 255
    high: float = 1.0
    summarise: bool = False  # regions: check and summarise each region as it is written


@dataclass(frozen=True)
class ShardRecord:
    """What the manifest keeps of one written shard."""

    name: str
    count: int
    bytes: int
    sha256: str
    keys: tuple[str, ...]
    offsets: tuple[int, ...]  # byte offset of each sample's first member header
    checksums: tuple[tuple[str, ...], ...]  # per sample, ``member_checksum`` of each member
    units: tuple[int, ...] | None = None  # region sets: crops an epoch draws from each region
    inputs: str = ""  # ``folder.shard_inputs``: what the shard was made from, for a rerun
    # lowest and highest label of its stored masks (None: no masks, or an older record)
    mask_range: tuple[int, int] | None = None
    # region sets, ``Encoding.summarise``: each region's core, ``manifest.checked_summary``;
    # handed to the run for the set's statistics, never saved
    intensity: tuple[Summary, ...] = field(default=(), compare=False, repr=False)

    @classmethod
    def from_json(cls, rec: dict[str, Any]) -> ShardRecord:
        return cls(
            rec["name"],
            rec["count"],
            rec["bytes"],
            rec["sha256"],
            tuple(rec["keys"]),
            tuple(rec["offsets"]),
            tuple(tuple(c) for c in rec["checksums"]),
            tuple(rec["units"]) if rec.get("units") is not None else None,
            rec.get("inputs", ""),
            tuple(rec["mask_range"]) if rec.get("mask_range") is not None else None,
        )

    def to_json(self) -> dict[str, Any]:
        record = {
            "name": self.name,
            "count": self.count,
            "bytes": self.bytes,
            "sha256": self.sha256,
            "keys": list(self.keys),
            "offsets": list(self.offsets),
            "checksums": [list(c) for c in self.checksums],
        }
        if self.units is not None:
            record["units"] = list(self.units)
        if self.inputs:
            record["inputs"] = self.inputs
        if self.mask_range is not None:
            record["mask_range"] = list(self.mask_range)
        return record


def _clamp(box: Sequence[tuple[int, int]], shape: Sequence[int]) -> tuple[slice, ...]:
    return tuple(slice(max(a, 0), min(b, n)) for (a, b), n in zip(box, shape, strict=True))


def read_block(
    volume: Volume, box: Sequence[tuple[int, int]], pad: str, region: Region | None = None
) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """Read ``box`` (per-axis [start, stop)) from a volume, padding what lies beyond its edge.

    ``region`` is an already-read part of the volume to cut from when it holds the box.
    Returns the block and the per-axis (before, after) padding applied.
    """
    inside = _clamp(box, volume.shape)
    if region is not None and region.holds(inside):
        block = region.cut(inside)
    else:
        block = np.asarray(volume.data[inside].compute(scheduler="sync"))
    widths = [(s.start - a, b - s.stop) for (a, b), s in zip(box, inside, strict=True)]
    if any(w for pair in widths for w in pair):
        if block.size == 0 or pad == "zero":
            block = np.pad(block, widths, mode="constant")
        else:
            block = np.pad(block, widths, mode="reflect" if min(block.shape) > 1 else "edge")
    return block, widths


@dataclass(frozen=True)
class Region:
    """A part of a volume read once and shared by the neighbouring crops that lie in it."""

    origin: tuple[int, ...]
    data: np.ndarray

    def holds(self, inside: tuple[slice, ...]) -> bool:
        return all(
            s.start >= o and s.stop <= o + n
            for s, o, n in zip(inside, self.origin, self.data.shape, strict=True)
        )

    def cut(self, inside: tuple[slice, ...]) -> np.ndarray:
        return self.data[
            tuple(slice(s.start - o, s.stop - o) for s, o in zip(inside, self.origin, strict=True))
        ]


def read_region(volume: Volume, boxes: Sequence[Sequence[tuple[int, int]]]) -> Region:
    """Read the part of ``volume`` that covers every box, once."""
    union = [(min(b[i][0] for b in boxes), max(b[i][1] for b in boxes)) for i in range(3)]
    inside = _clamp(union, volume.shape)
    data = np.asarray(volume.data[inside].compute(scheduler="sync"))
    return Region(tuple(s.start for s in inside), data)


def group_crops(
    crops: Sequence[Crop], encoding: Encoding, *, slack: float = 2.0
) -> list[list[Crop]]:
    """Runs of consecutive crops of one source whose joint box is at most ``slack`` times the
    voxels of their own boxes: such a run is read as one region, each chunk once, and memory
    stays bounded by the shard (scattered crops fall back to one read each)."""
    groups: list[list[Crop]] = []
    union: list[list[int]] = []
    own = 0
    size = math.prod(c + 2 * m for c, m in zip(encoding.crop, encoding.margin, strict=True))
    for crop in crops:
        box = crop_box(crop.centre, encoding.crop, encoding.margin)
        if groups and groups[-1][0].source == crop.source:
            grown = [[min(u[0], b[0]), max(u[1], b[1])] for u, b in zip(union, box, strict=True)]
            if math.prod(b - a for a, b in grown) <= slack * (own + size):
                groups[-1].append(crop)
                union, own = grown, own + size
                continue
        groups.append([crop])
        union, own = [list(b) for b in box], size
    return groups


def encode_image(block: np.ndarray, encoding: Encoding) -> np.ndarray:
    """Convert a crop to the stored dtype (uint8 scaled by the data set's robust percentiles)."""
    if encoding.dtype == "keep":
        return block
    if encoding.dtype == "float16":
        return block.astype(np.float16)
    scale = 255.0 / max(encoding.high - encoding.low, 1e-12)
    scaled = (block.astype(np.float32) - encoding.low) * scale
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def build_sample(
    source: ShardSource,
    crop: Crop,
    encoding: Encoding,
    regions: tuple[Region | None, Region | None] = (None, None),
) -> dict[str, Any]:
    """Read and label one crop: the members of one WebDataset sample, not yet serialised.

    ``regions`` are already-read parts of the image and mask that hold this crop, if any.
    """
    box = crop_box(crop.centre, encoding.crop, encoding.margin)
    image, widths = read_block(source.image, box, encoding.pad, regions[0])
    sample: dict[str, Any] = {"__key__": crop.key, "image.npy": encode_image(image, encoding)}
    if source.mask is not None:
        mask, _ = read_block(source.mask, box, encoding.pad, regions[1])
        sample["mask.npy"] = _small_int(mask, source.mask.path)
    if source.points is not None:
        start = np.array([a for a, _ in box], dtype=np.float32)
        stop = np.array([b for _, b in box], dtype=np.float32)
        points = source.points[inside(source.points, start, stop)].astype(np.float32, copy=True)
        points[:, :3] -= start
        sample["points.npy"] = points
    if crop.label >= 0:
        sample["cls"] = str(crop.label)
    sample["json"] = {
        "key": crop.key,
        "source": source.id,
        "path": str(source.image.path),
        "centre": list(crop.centre),
        "box": [list(b) for b in box],
        "crop": list(encoding.crop),
        "margin": list(encoding.margin),
        "voxel_size": list(source.image.voxel_size) if source.image.voxel_size else None,
        "label": crop.label,
        "padded": [list(w) for w in widths] if any(sum(w) for w in widths) else None,
        "pad_mode": encoding.pad,
    }
    return sample


def _small_int(mask: np.ndarray, path: Path) -> np.ndarray:
    """A mask block as uint8 where its labels fit, else int32; labels beyond int32 are refused
    rather than wrapped."""
    if mask.dtype == np.bool_:
        return mask.astype(np.uint8)
    if not mask.size:
        return mask.astype(np.int32, copy=False)
    low, high = int(mask.min()), int(mask.max())
    if low >= 0 and high <= 255:
        return mask.astype(np.uint8, copy=False)
    bounds = np.iinfo(np.int32)
    if low < bounds.min or high > bounds.max:
        raise BadLabels(
            f"mask {path}: label {high if high > bounds.max else low}; expected labels within "
            f"int32 ({bounds.min} to {bounds.max}): masks hold class labels"
        )
    return mask.astype(np.int32, copy=False)


def _member_bytes(suffix: str, value: Any) -> bytes:
    if suffix.endswith(".npy"):
        buffer = io.BytesIO()
        np.save(buffer, np.ascontiguousarray(value), allow_pickle=False)
        return buffer.getvalue()
    if suffix == "json":
        return json.dumps(value, sort_keys=True).encode()
    return str(value).encode()


class _HashingFile:
    """A write-only file that hashes what passes through, so a shard is never read back."""

    def __init__(self, raw: Any) -> None:
        self.raw = raw
        self.digest = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        self.size += len(data)
        return self.raw.write(data)

    def tell(self) -> int:
        return self.size


def write_tar(path: Path, samples: Iterable[dict[str, Any]]) -> ShardRecord:
    """Write samples to ``path`` atomically; return the shard's record (count, size, sha256,
    each member's checksum, the range of its mask labels)."""
    keys: list[str] = []
    offsets: list[int] = []
    checksums: list[tuple[str, ...]] = []
    labels: list[int] = []  # each mask's lowest and highest label
    with atomic_file(path) as raw:
        out = _HashingFile(raw)
        with tarfile.open(fileobj=out, mode="w", format=tarfile.USTAR_FORMAT) as tar:  # type: ignore[call-overload]
            tar.copybufsize = 2**22
            for sample in samples:
                key = sample["__key__"]
                if "." in key:
                    raise BadInput(f"sample key {key!r} holds a dot; WebDataset would cut it there")
                keys.append(key)
                offsets.append(tar.offset)
                mask = sample.get("mask.npy")
                if mask is not None and mask.size:
                    labels += (int(mask.min()), int(mask.max()))
                sums = []
                for suffix, value in sample.items():
                    if suffix == "__key__":
                        continue
                    data = _member_bytes(suffix, value)
                    sums.append(member_checksum(data))
                    info = tarfile.TarInfo(f"{key}.{suffix}")
                    info.size, info.mtime, info.mode = len(data), MTIME, 0o644
                    info.uname = info.gname = "streamvol"
                    tar.addfile(info, io.BytesIO(data))
                checksums.append(tuple(sums))
    return ShardRecord(
        path.name,
        len(keys),
        out.size,
        out.digest.hexdigest(),
        tuple(keys),
        tuple(offsets),
        tuple(checksums),
        mask_range=(min(labels), max(labels)) if labels else None,
    )


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(2**20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_region_image(source: ShardSource, tile: Tile) -> np.ndarray:
    """The stored box of a region (a whole volume or a tile of it, never padded)."""
    return read_block(source.image, list(zip(tile.start, tile.stop, strict=True)), "zero")[0]


def core_summary(source: ShardSource, tile: Tile, dtype: str) -> Summary:
    """``manifest.checked_summary`` of a region's core, read afresh: for the regions of shards
    a resumed run kept."""
    return _core_summary(source, tile, read_region_image(source, tile), dtype)


def _core_summary(source: ShardSource, tile: Tile, image: np.ndarray, dtype: str) -> Summary:
    core = tuple(
        slice(a - o, b - o)
        for a, b, o in zip(tile.core_start, tile.core_stop, tile.start, strict=True)
    )
    return checked_summary(source.image, image, core, tile.core_start, dtype)


def build_region_sample(
    source: ShardSource, tile: Tile, image: np.ndarray, encoding: Encoding
) -> dict[str, Any]:
    """One region (``image``: its stored box) with its picks, mask and class: the members of
    one WebDataset sample of a region shard set."""
    box = list(zip(tile.start, tile.stop, strict=True))
    sample: dict[str, Any] = {"__key__": tile.key, "image.npy": encode_image(image, encoding)}
    if source.mask is not None:
        mask, _ = read_block(source.mask, box, encoding.pad)
        sample["mask.npy"] = _small_int(mask, source.mask.path)
    if tile.points is not None:
        sample["points.npy"] = tile.points
    if tile.label >= 0:
        sample["cls"] = str(tile.label)
    sample["json"] = {
        "key": tile.key,
        "region": True,
        "source": source.id,
        "path": str(source.image.path),
        "origin": list(tile.start),
        "shape": list(tile.shape),
        "core": [
            [a - o, b - o]
            for a, b, o in zip(tile.core_start, tile.core_stop, tile.start, strict=True)
        ],
        "volume_shape": list(tile.volume_shape),
        "core_points": tile.core_points,
        "units": list(tile.units),
        "crop": list(encoding.crop),
        "voxel_size": list(source.image.voxel_size) if source.image.voxel_size else None,
        "label": tile.label,
        "pad_mode": encoding.pad,
    }
    return sample


def write_shard(
    path: Path,
    crops: Sequence[Crop] | Sequence[Tile],
    sources: dict[str, ShardSource],
    encoding: Encoding,
) -> ShardRecord:
    """The dask task: read this shard's crops (or regions) and write its tar."""
    if crops and isinstance(crops[0], Tile):
        tiles: Sequence[Tile] = crops  # type: ignore[assignment]
        summaries: list[Summary] = []

        def regions() -> Iterator[dict[str, Any]]:
            for tile in tiles:
                source = sources[tile.source]
                image = read_region_image(source, tile)
                if encoding.summarise:  # raises on bad values before this tar is complete
                    summaries.append(_core_summary(source, tile, image, encoding.dtype))
                yield build_region_sample(source, tile, image, encoding)

        record = write_tar(Path(path), regions())
        units = tuple(t.n_units for t in tiles)
        return dataclasses.replace(record, units=units, intensity=tuple(summaries))

    def samples() -> Iterator[dict[str, Any]]:
        for group in group_crops(crops, encoding):
            source = sources[group[0].source]
            regions: tuple[Region | None, Region | None] = (None, None)
            if len(group) > 1:
                boxes = [crop_box(c.centre, encoding.crop, encoding.margin) for c in group]
                mask = read_region(source.mask, boxes) if source.mask is not None else None
                regions = (read_region(source.image, boxes), mask)
            for crop in group:
                yield build_sample(source, crop, encoding, regions)

    return write_tar(Path(path), samples())
