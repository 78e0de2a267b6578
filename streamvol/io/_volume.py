"""Open any supported volume lazily as a (z, y, x) dask array with its voxel size.

Formats: zarr v2/v3 arrays, OME-NGFF multiscale groups (0.4 and 0.5), multi-page TIFF, a folder
of one TIFF per slice, MRC/REC, and ``.npy``. Nothing is read whole: file-backed formats go
through a picklable lazy array that opens its file on first access in each process, so the same
dask graph runs on threads, processes or a ``dask.distributed`` cluster.
"""

from __future__ import annotations

import math
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np

from streamvol.errors import (
    BadOption,
    InconsistentSlices,
    NoVolumeFound,
    ShapeMismatch,
    UnreadableVolume,
)

VOLUME_SUFFIXES = (".zarr", ".tif", ".tiff", ".mrc", ".rec", ".map", ".npy")
TIFF_SUFFIXES = (".tif", ".tiff")
_UNIT_TO_ANGSTROM = {
    "angstrom": 1.0,
    "nanometer": 10.0,
    "nm": 10.0,
    "micrometer": 1e4,
    "micron": 1e4,
    "um": 1e4,
    "µm": 1e4,
    "millimeter": 1e7,
}
_CHUNK_BYTES = 8 * 2**20
_TIFF_LOCK = threading.Lock()

VoxelSize = tuple[float, float, float]


@dataclass(frozen=True)
class Volume:
    """A lazily opened 3D volume.

    ``data`` is a dask array in (z, y, x) order; ``voxel_size`` is (z, y, x) in Angstrom, or None
    when the file does not say; ``format`` names the reader that opened ``path``.
    """

    data: da.Array
    voxel_size: VoxelSize | None
    path: Path
    format: str
    level: int = 0

    def __post_init__(self) -> None:
        if not self.data.dtype.isnative:  # a big-endian MRC, .npy or zarr: numba wants native
            native = self.data.astype(self.data.dtype.newbyteorder("="))
            object.__setattr__(self, "data", native)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.data.shape)  # type: ignore[return-value]

    @property
    def dtype(self) -> np.dtype:
        return self.data.dtype

    @property
    def id(self) -> str:
        return source_id(self.path)

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        """``np.asarray(volume)`` reads the whole volume, as it would of the dask array."""
        return np.asarray(self.data.compute(), dtype=dtype)


def source_id(path_or_name: str | Path) -> str:
    """A key-safe id for a source: its name without volume suffix, dots and odd characters as '-'.

    WebDataset cuts a sample key at its first dot, so ids never hold one.
    """
    name = Path(path_or_name).name
    for suffix in (*VOLUME_SUFFIXES, ".ome"):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
    return re.sub(r"[^A-Za-z0-9_-]", "-", name) or "volume"


def natural_key(name: str | Path) -> list[Any]:
    """Sort key putting ``slice2.tif`` before ``slice10.tif``."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", str(name))]


def open_volume(path: str | Path, *, level: int = 0) -> Volume:
    """Open the volume at ``path`` lazily; ``level`` picks an OME-NGFF resolution level."""
    path = Path(path)
    if not path.exists():
        raise NoVolumeFound(f"{path}: no such file or folder")
    suffix = path.suffix.lower()
    if path.is_dir() and (suffix == ".zarr" or _is_zarr_dir(path)):
        return _open_zarr(path, level)
    if path.is_dir():
        return _open_slices(path)
    if suffix in TIFF_SUFFIXES:
        return _open_tiff(path)
    if suffix in (".mrc", ".rec", ".map"):
        return _open_mrc(path)
    if suffix == ".npy":
        return _open_npy(path)
    raise NoVolumeFound(
        f"{path}: not a volume; expected a zarr folder, a folder of TIFF slices, "
        f"or a file ending in one of {', '.join(VOLUME_SUFFIXES[1:])}"
    )


def open_mask(path: str | Path, image: Volume) -> Volume:
    """Open a label volume that must match ``image`` voxel for voxel."""
    mask = open_volume(path, level=image.level)
    if mask.shape != image.shape:
        raise ShapeMismatch(
            f"mask {mask.path} has shape {mask.shape} but its image {image.path} "
            f"has shape {image.shape}; expected equal shapes"
        )
    if not (np.issubdtype(mask.dtype, np.integer) or mask.dtype == np.bool_):
        raise ShapeMismatch(f"mask {mask.path}: expected an integer label volume, got {mask.dtype}")
    return mask


# --- lazy, picklable file access ------------------------------------------------------------


class _LazyFile:
    """An array-like over a file, opened on first access in each process (dask-friendly).

    Pickles as its path, never as its data.
    """

    def __init__(self, path: Path, shape: tuple[int, ...], dtype: np.dtype) -> None:
        self.path = path
        self.shape = shape
        self.dtype = np.dtype(dtype)
        self.ndim = len(shape)
        self._handle: Any = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_handle": None}

    def _open(self) -> Any:
        raise NotImplementedError

    def __getitem__(self, index: Any) -> np.ndarray:
        if self._handle is None:
            self._handle = self._open()
        try:
            return np.asarray(self._read(index))
        except Exception as exc:  # corrupt data inside a readable header
            raise UnreadableVolume(f"{self.path}: could not read {index}: {exc}") from exc

    def _read(self, index: Any) -> np.ndarray:
        return self._handle[index]


class _MemmapFile(_LazyFile):
    """MRC and .npy: a read-only memory map at a byte offset."""

    def __init__(self, path: Path, shape: tuple[int, ...], dtype: np.dtype, offset: int) -> None:
        super().__init__(path, shape, dtype)
        self.offset = offset

    def _open(self) -> np.memmap:
        return np.memmap(
            self.path, dtype=self.dtype, mode="r", offset=self.offset, shape=self.shape
        )


class _TiffPages(_LazyFile):
    """A multi-page TIFF read page by page: z index -> page."""

    def _open(self) -> Any:
        import tifffile

        return tifffile.TiffFile(self.path)  # kept open: its pages read from this handle

    def __del__(self) -> None:
        if self._handle is not None:
            self._handle.close()

    def _read(self, index: Any) -> np.ndarray:
        zs, rest = _split_index(index, self.shape[0])
        with _TIFF_LOCK:  # one file handle per process: its seek + read must not interleave
            pages = self._handle.series[0].pages
            planes = [pages[z].asarray() for z in zs]
        return np.stack(planes)[(slice(None), *rest)]


class _TiffSlices(_LazyFile):
    """A folder of single-slice TIFFs: z index -> file."""

    def __init__(self, files: list[Path], shape: tuple[int, ...], dtype: np.dtype) -> None:
        super().__init__(files[0].parent, shape, dtype)
        self.files = files

    def _open(self) -> list[Path]:
        return self.files

    def _read(self, index: Any) -> np.ndarray:
        import tifffile

        zs, rest = _split_index(index, self.shape[0])
        planes = [tifffile.imread(self.files[z]).reshape(self.shape[1:]) for z in zs]
        return np.stack(planes)[(slice(None), *rest)]


def _split_index(index: Any, depth: int) -> tuple[range, tuple[Any, ...]]:
    """Split a dask getitem index into the z range to read and the rest to slice in memory."""
    index = index if isinstance(index, tuple) else (index,)
    first = index[0] if index else slice(None)
    if isinstance(first, (int, np.integer)):
        first = slice(int(first), int(first) + 1)
    return range(*first.indices(depth)), tuple(index[1:])


def _lazy(array: _LazyFile) -> da.Array:
    """Wrap a lazy file as a dask array with z-slab chunks of about 8 MiB."""
    plane = math.prod(array.shape[1:]) * array.dtype.itemsize
    depth = max(1, min(array.shape[0], _CHUNK_BYTES // max(plane, 1)))
    meta = np.empty((0,) * array.ndim, dtype=array.dtype)  # so dask never reads to learn it
    return da.from_array(
        array, chunks=(depth, *array.shape[1:]), asarray=False, lock=False, meta=meta
    )


# --- formats --------------------------------------------------------------------------------


def _is_zarr_dir(path: Path) -> bool:
    return any((path / name).exists() for name in ("zarr.json", ".zarray", ".zgroup"))


def _open_zarr(path: Path, level: int) -> Volume:
    import zarr

    try:
        node = zarr.open(str(path), mode="r")
    except Exception as exc:
        raise UnreadableVolume(f"{path}: not a readable zarr store: {exc}") from exc
    if isinstance(node, zarr.Array):
        if level != 0:
            raise BadOption("level", level, f"{path}: a plain zarr array has one level, 0")
        data = _squeeze_to_3d(da.from_zarr(node), path)
        return Volume(data, None, path, f"zarr-v{node.metadata.zarr_format}")
    attrs = dict(node.attrs)
    multiscales = attrs.get("multiscales") or attrs.get("ome", {}).get("multiscales")
    if not multiscales:
        arrays = sorted(name for name, _ in node.arrays())
        raise NoVolumeFound(
            f"{path}: a zarr group without OME-NGFF 'multiscales' metadata; "
            f"expected an array or an OME-NGFF group, found arrays {arrays or 'none'}"
        )
    return _open_ngff(node, path, multiscales[0], level)


def _open_ngff(group: Any, path: Path, ms: dict[str, Any], level: int) -> Volume:
    datasets = ms.get("datasets") or []
    if not 0 <= level < len(datasets):
        raise BadOption(
            "level", level, f"{path}: expected a level of 0..{len(datasets) - 1} (the group's)"
        )
    entry = datasets[level]
    try:
        array = group[entry["path"]]
    except KeyError as exc:
        raise UnreadableVolume(
            f"{path}: level {level} names missing array {entry['path']!r}"
        ) from exc
    axes = [a if isinstance(a, dict) else {"name": a} for a in ms.get("axes", [])]
    if not axes:
        axes = [{"name": n} for n in "tczyx"[-array.ndim :]]
    if len(axes) != array.ndim:
        raise UnreadableVolume(
            f"{path}: {len(axes)} axes in metadata but level {level} is {array.ndim}D"
        )
    scale = [1.0] * array.ndim
    for transform in list(ms.get("coordinateTransformations", [])) + list(
        entry.get("coordinateTransformations", [])
    ):
        if transform.get("type") == "scale":
            given = transform.get("scale")
            if not isinstance(given, list) or len(given) != array.ndim:
                raise UnreadableVolume(
                    f"{path}: level {level}'s scale {given!r}; expected {array.ndim} numbers, "
                    "one per axis"
                )
            scale = [a * float(b) for a, b in zip(scale, given, strict=True)]
    names = [a["name"] for a in axes]
    missing = [n for n in "zyx" if n not in names]
    if missing:
        raise UnreadableVolume(f"{path}: expected spatial axes z, y, x; metadata names {names}")
    data = da.from_zarr(array)
    # Drop size-1 non-spatial axes, then put z, y, x in order.
    keep = []
    for i, name in enumerate(names):
        if name in "zyx":
            keep.append(i)
        elif data.shape[i] != 1:
            raise UnreadableVolume(
                f"{path}: axis {name!r} has size {data.shape[i]}; "
                "expected 1 (one channel, one time point)"
            )
    data = data[tuple(slice(None) if i in keep else 0 for i in range(data.ndim))]
    kept = [names[i] for i in keep]
    order = [kept.index(n) for n in "zyx"]
    data = data.transpose(order)
    units = {a["name"]: a.get("unit") for a in axes}
    voxel: VoxelSize | None = tuple(  # type: ignore[assignment]
        scale[names.index(n)] * _UNIT_TO_ANGSTROM.get(str(units.get(n) or "").lower(), math.nan)
        for n in "zyx"
    )
    if voxel is not None and any(math.isnan(v) for v in voxel):
        voxel = None  # unitless or unknown units: no physical voxel size
    version = ms.get("version", "")
    return Volume(data, voxel, path, f"ome-ngff{'-' + version if version else ''}", level)


def _squeeze_to_3d(data: da.Array, path: Path) -> da.Array:
    while data.ndim > 3 and data.shape[0] == 1:
        data = data[0]
    if data.ndim != 3:
        raise UnreadableVolume(f"{path}: expected a 3D (z, y, x) volume, got shape {data.shape}")
    return data


def _open_tiff(path: Path) -> Volume:
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            shape, axes = tuple(series.shape), series.axes
            samples = dict(zip(axes, shape, strict=True)).get("S", 1)
            dtype = series.dtype
            n_pages = len(series.pages)
            page_shape = tuple(series.pages[0].shape) if n_pages else ()
            voxel = _imagej_voxel_size(tif)
    except Exception as exc:
        raise UnreadableVolume(f"{path}: not a readable TIFF: {exc}") from exc
    if samples > 1:  # RGB(A) pixels: their channels would be read as the x axis
        raise UnreadableVolume(
            f"{path}: {samples} samples per pixel (RGB, series axes {axes}, shape {shape}); "
            "expected one value per voxel: save a single-channel (grayscale) stack (tifffile: "
            "photometric='minisblack')"
        )
    kept = [(a, s) for a, s in zip(axes, shape, strict=True) if s != 1 or len(shape) <= 3]
    shape = tuple(s for _, s in kept)
    if len(shape) == 2:  # as a 2D .npy: one image is no volume (a folder of slices is)
        raise UnreadableVolume(
            f"{path}: expected a 3D stack (z, y, x), got a 2D image of shape {shape}; "
            "write the stack as one multi-page TIFF, or put its slices in a folder"
        )
    if len(shape) != 3:  # a 3D stack tifffile labels C (its default for 3D ImageJ) is read as z
        channels = dict(kept).get("C")
        raise UnreadableVolume(
            f"{path}: expected a 3D stack (z, y, x), got series axes {axes} of shape "
            f"{tuple(series.shape)}"
            + (f": {channels} channels; save each as its own z stack" if channels else "")
        )
    if n_pages != shape[0] or page_shape != shape[1:]:
        # One page holds the whole volume, or pages are not (y, x) planes (a trailing axis of
        # 1 that tifffile reads as samples): read the series as a whole.
        array = _WholeTiff(path, shape, dtype)
        return Volume(_lazy(array), voxel, path, "tiff")
    return Volume(_lazy(_TiffPages(path, shape, dtype)), voxel, path, "tiff")


class _WholeTiff(_LazyFile):
    def _open(self) -> np.ndarray:
        import tifffile

        return tifffile.imread(self.path).reshape(self.shape)


def _imagej_voxel_size(tif: Any) -> VoxelSize | None:
    """Voxel size from ImageJ metadata (spacing, resolution, unit), in Angstrom."""
    meta = tif.imagej_metadata or {}
    unit = str(meta.get("unit", "")).lower().replace("\\u00b5", "µ")  # ImageJ escapes it
    factor = _UNIT_TO_ANGSTROM.get(unit)
    if factor is None or "spacing" not in meta:
        return None
    tags = tif.pages[0].tags
    try:
        xres = tags["XResolution"].value
        yres = tags["YResolution"].value
        x = xres[1] / xres[0]
        y = yres[1] / yres[0]
    except (KeyError, ZeroDivisionError):
        return None
    return (float(meta["spacing"]) * factor, y * factor, x * factor)


def _open_slices(folder: Path) -> Volume:
    import tifffile

    files = sorted(
        (
            p
            for p in folder.iterdir()
            if p.suffix.lower() in TIFF_SUFFIXES and p.is_file() and not p.name.startswith(".")
        ),  # without macOS's ._x copies, as discovery skips them
        key=natural_key,
    )
    if not files:
        seen = sum(1 for _ in folder.iterdir())
        raise NoVolumeFound(
            f"{folder}: no volume found; saw {seen} entries, tried a zarr store "
            f"(zarr.json, .zarray, .zgroup) and TIFF slices (*.tif, *.tiff)"
        )
    first: tuple[tuple[int, ...], np.dtype] | None = None
    for f in files:
        try:
            with tifffile.TiffFile(f) as tif:
                page = tif.series[0]
                shape, dtype = tuple(s for s in page.shape if s != 1), page.dtype
        except Exception as exc:
            raise UnreadableVolume(f"{f}: not a readable TIFF slice: {exc}") from exc
        if len(shape) != 2:
            raise InconsistentSlices(f"{f}: expected a 2D slice, got shape {shape}")
        if first is None:
            first = (shape, dtype)
        elif (shape, dtype) != first:
            raise InconsistentSlices(
                f"{f}: slice has shape {shape} and dtype {dtype}, but {files[0].name} "
                f"has shape {first[0]} and dtype {first[1]}; expected every slice alike"
            )
    shape, dtype = first  # type: ignore[misc]
    array = _TiffSlices(files, (len(files), *shape), dtype)
    return Volume(_lazy(array), None, folder, "tiff-slices")


def _open_mrc(path: Path) -> Volume:
    import mrcfile

    try:
        with mrcfile.open(path, mode="r", header_only=True, permissive=False) as mrc:
            header = mrc.header
            nx, ny, nz = int(header.nx), int(header.ny), int(header.nz)
            dtype = mrcfile.utils.data_dtype_from_header(header)
            offset = header.nbytes + int(header.nsymbt)
            vs = mrc.voxel_size
            voxel = (float(vs.z), float(vs.y), float(vs.x))
    except Exception as exc:
        raise UnreadableVolume(f"{path}: not a readable MRC file: {exc}") from exc
    expected = offset + nx * ny * nz * dtype.itemsize
    if path.stat().st_size < expected:
        raise UnreadableVolume(
            f"{path}: truncated MRC; header says {nz}x{ny}x{nx} {dtype} "
            f"({expected} bytes), file has {path.stat().st_size}"
        )
    array = _MemmapFile(path, (nz, ny, nx), dtype, offset)
    return Volume(_lazy(array), voxel if all(v > 0 for v in voxel) else None, path, "mrc")


def _open_npy(path: Path) -> Volume:
    try:
        mm = np.load(path, mmap_mode="r", allow_pickle=False)
    except Exception as exc:
        raise UnreadableVolume(f"{path}: not a readable .npy array: {exc}") from exc
    if mm.ndim != 3:
        raise UnreadableVolume(f"{path}: expected a 3D (z, y, x) array, got shape {mm.shape}")
    if not mm.flags.c_contiguous:
        raise UnreadableVolume(f"{path}: Fortran-ordered .npy; expected C order")
    array = _MemmapFile(path, mm.shape, mm.dtype, int(mm.offset))
    return Volume(_lazy(array), None, path, "npy")
