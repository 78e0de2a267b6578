"""Safe decoding of shard members: ``.npy`` without pickles, ``.json``, ``.cls`` and text only.

Anything else (``.pyd``, ``.pickle``, ``.pth``, ...) is refused by name: a shard is data, never
code. Read against the manifest (``Expected``), every sample's key and every member's checksum
are checked as they are read, and the tar must end where the manifest says.
"""

from __future__ import annotations

import io
import json
import mmap
import os
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from streamvol.core.manifest import member_checksum
from streamvol.errors import ChecksumMismatch, ShardError, UnsafeMember

SAFE_SUFFIXES = ("npy", "json", "cls", "txt")
REQUIRED = ("image.npy",)  # every streamvol sample has its stored block


def split_name(name: str) -> tuple[str, str]:
    """``"a_z1_y2_x3.image.npy"`` -> (``"a_z1_y2_x3"``, ``"image.npy"``): split at the first dot."""
    key, _, suffix = name.partition(".")
    return key, suffix


@lru_cache(maxsize=256)
def _npy_header(header: bytes, read_header: str) -> tuple[tuple[int, ...], bool, np.dtype]:
    """(shape, fortran order, dtype) of a ``.npy`` header: numpy parses it with
    ``ast.literal_eval``, and a shard's members repeat a handful of headers."""
    buffer = io.BytesIO(header)
    np.lib.format.read_magic(buffer)
    return getattr(np.lib.format, read_header)(buffer)


def _npy(data: bytearray | np.ndarray) -> np.ndarray:
    """A ``.npy`` member as an array over its own buffer (no copy); object arrays refused."""
    view = memoryview(data).cast("B")
    # only the header goes through numpy's parser (a BytesIO of the whole member would copy it)
    version = tuple(view[6:8]) if len(view) >= 8 else ()
    if version == (1, 0):
        end, read_header = 10 + int.from_bytes(view[8:10], "little"), "read_array_header_1_0"
    elif version in ((2, 0), (3, 0)):
        end, read_header = 12 + int.from_bytes(view[8:12], "little"), "read_array_header_2_0"
    else:
        raise ShardError(f"not a .npy member (format version {version or 'missing'})")
    shape, fortran, dtype = _npy_header(view[:end].tobytes(), read_header)
    if dtype.hasobject:
        raise ShardError("object arrays need pickle, which streamvol never loads")
    count = int(np.prod(shape, dtype=np.int64))
    array = np.frombuffer(view, dtype=dtype, count=count, offset=end)
    return array.reshape(shape, order="F" if fortran else "C")


def decode_member(suffix: str, data: bytes | bytearray | np.ndarray, *, where: str = "") -> Any:
    """Decode one member's bytes (or uint8 array) by its suffix; refuse every type that could
    run code. Arrays come back writable, over the member's own buffer."""
    kind = suffix.rsplit(".", 1)[-1]
    try:
        if kind == "npy":
            return _npy(bytearray(data) if isinstance(data, bytes) else data)
        if kind == "json":
            return json.loads(bytes(data))
        if kind == "cls":
            return int(bytes(data).decode().strip())
        if kind == "txt":
            return bytes(data).decode()
    except (ValueError, UnicodeDecodeError) as exc:
        raise ShardError(f"{where}: member .{suffix} is corrupt: {exc}") from exc
    raise UnsafeMember(
        f"{where}: member .{suffix} is not a type streamvol decodes; "
        f"expected one of {', '.join('.' + s for s in SAFE_SUFFIXES)} (pickles are never loaded)"
    )


BLOCK = 512


def _field(header: bytes, start: int, size: int) -> bytes:
    return header[start : start + size].split(b"\0", 1)[0]


def _number(header: bytes, start: int, size: int, where: str) -> int:
    raw = header[start : start + size]
    if raw[0] & 0x80:  # GNU base-256 for large sizes
        return int.from_bytes(raw[1:], "big")
    text = raw.split(b"\0", 1)[0].strip() or b"0"
    try:
        return int(text, 8)
    except ValueError:
        raise ShardError(f"{where}: corrupt tar header (number {text!r})") from None


class MappedFile:
    """A local file read through a private memory map: ``read_members`` hands out members as
    views of the map, so a stored block goes from the page cache straight to the kernel that
    reads it, without a copy in between. Private (copy-on-write): the arrays are writable, and
    writing never reaches the file. The map lives until the last array made from it is gone;
    the sharder replaces shards by renaming, never in place, so a mapped file never shrinks."""

    def __init__(self, path: str | Path) -> None:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            self._map = mmap.mmap(f.fileno(), size, access=mmap.ACCESS_COPY) if size else b""
        self._pos = 0

    def __enter__(self) -> MappedFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._map = b""  # unmapped once no member array refers to it any more

    def seek(self, pos: int, whence: int = 0) -> int:
        self._pos = max(0, (0, self._pos, len(self._map))[whence] + pos)
        return self._pos

    def tell(self) -> int:
        return self._pos

    def read(self, size: int = -1) -> bytes:
        end = len(self._map) if size < 0 else min(self._pos + size, len(self._map))
        data = bytes(self._map[self._pos : end])
        self._pos = max(self._pos, end)
        return data

    def view(self, size: int) -> np.ndarray:
        """The next ``size`` bytes as a uint8 array over the map (fewer at the end of the file)."""
        size = max(0, min(size, len(self._map) - self._pos))
        data = (
            np.frombuffer(self._map, np.uint8, size, self._pos) if size else np.empty(0, np.uint8)
        )
        self._pos += size
        return data


def _size_left(fileobj: Any) -> int | None:
    """Bytes from the current position to the end of a seekable file, else None."""
    try:
        here = fileobj.tell()
        end = fileobj.seek(0, 2)
        fileobj.seek(here)
    except (AttributeError, OSError, ValueError):
        return None
    return None if end is None else end - here


def _read_exact(fileobj: Any, size: int, where: str) -> np.ndarray:
    """``size`` bytes into a fresh uint8 array (``np.empty``: unlike ``bytearray(size)``, not
    zero-filled first), or a view of a ``MappedFile``."""
    if isinstance(fileobj, MappedFile):
        data = fileobj.view(size)
        if data.size < size:
            raise ShardError(
                f"{where}: truncated tar (a member ends after {data.size} of {size} bytes)"
            )
        return data
    data = np.empty(size, np.uint8)
    view = memoryview(data)
    got = 0
    while got < size:
        n = fileobj.readinto(view[got:])
        if not n:
            raise ShardError(f"{where}: truncated tar (a member ends after {got} of {size} bytes)")
        got += n
    return data


def _read_unsized(fileobj: Any, size: int, where: str) -> np.ndarray:
    """``size`` bytes from a stream of unknown length, in blocks of at most 64 MiB, so a
    header that declares more than the stream holds never allocates what it declares."""
    parts: list[bytes] = []
    got = 0
    while got < size:
        part = fileobj.read(min(size - got, 2**26))
        if not part:
            raise ShardError(f"{where}: truncated tar (a member ends after {got} of {size} bytes)")
        parts.append(part)
        got += len(part)
    return np.frombuffer(bytearray(b"".join(parts)), np.uint8)


def read_members(fileobj: Any, where: str) -> Iterator[tuple[str, np.ndarray]]:
    """(name, data) of each regular file in a tar stream positioned at a header.

    A direct reader (one ``readinto`` per member, or a view of a ``MappedFile``; checksums
    verified): the streaming mode of ``tarfile`` costs several milliseconds per large member.
    Handles ustar, GNU long names and pax path records; ends at the end-of-archive block, and a
    stream that stops before it is reported truncated. A header that declares more bytes than
    the file holds is refused before anything is allocated for it.
    """
    left = _size_left(fileobj)
    end = None if left is None else fileobj.tell() + left
    long_name: str | None = None
    while True:
        header = fileobj.read(BLOCK)
        if len(header) < BLOCK:
            raise ShardError(f"{where}: truncated tar (no end-of-archive marker)")
        if header == bytes(BLOCK):
            return
        stored = _number(header, 148, 8, where)
        checksum = sum(header[:148]) + 8 * 32 + sum(header[156:])
        if stored != checksum:
            raise ShardError(f"{where}: corrupt tar header (checksum)")
        size = _number(header, 124, 12, where)
        kind = header[156:157]
        if end is not None and fileobj.tell() + size > end:
            name = _field(header, 0, 100).decode(errors="replace")
            raise ShardError(
                f"{where}: member {name!r} declares {size} bytes but the file holds "
                f"{end - fileobj.tell()} after its header; corrupt or truncated tar"
            )
        if end is None:
            data = _read_unsized(fileobj, size, where)
        else:
            data = _read_exact(fileobj, size, where)
        fileobj.read(-size % BLOCK)
        if kind == b"L":  # GNU long name for the next member
            long_name = bytes(data).split(b"\0", 1)[0].decode()
            continue
        if kind == b"x":  # pax extended header: only the path record matters here
            for record in bytes(data).decode().splitlines():
                _, _, text = record.partition(" ")
                if text.startswith("path="):
                    long_name = text[5:]
            continue
        if kind not in (b"0", b"\0", b"7"):  # directories, links, global headers
            long_name = None
            continue
        name = long_name
        if name is None:
            name = _field(header, 0, 100).decode()
            prefix = _field(header, 345, 155).decode() if header[257:262] == b"ustar" else ""
            name = f"{prefix}/{name}" if prefix else name
        long_name = None
        yield name, data


@dataclass(frozen=True)
class Expected:
    """What the manifest says a run of consecutive samples of one shard holds.

    ``checksums``: per sample, the ``member_checksum`` of each member in tar order (None: not
    checked). ``last``: the run ends the shard, so the end-of-archive must follow it.
    ``shape``: the manifest's ``stored_shape`` every image has (None: a region set's vary).
    """

    keys: tuple[str, ...]
    checksums: tuple[tuple[str, ...], ...] | None = None
    last: bool = False
    shape: tuple[int, ...] | None = None

    @classmethod
    def of(cls, record: dict[str, Any], start: int = 0, count: int | None = None) -> Expected:
        """Samples ``start .. start + count`` of a manifest's shard record."""
        stop = len(record["keys"]) if count is None else start + count
        checks = record.get("checksums")
        return cls(
            tuple(record["keys"][start:stop]),
            None if checks is None else tuple(map(tuple, checks[start:stop])),
            stop == len(record["keys"]),
        )


def _unsafe(name: str) -> bool:
    """A member name that is no sample member: absolute, with ``..``, or with an empty key."""
    parts = name.replace("\\", "/").split("/")
    return name.startswith(("/", "\\")) or ".." in parts or not split_name(parts[-1])[0]


def _samples(members: Iterator[tuple[str, np.ndarray]], where: str) -> Iterator[tuple[str, list]]:
    """Members grouped by sample key, in tar order: (key, [(suffix, data), ...])."""
    key, group = None, []
    for name, data in members:
        if _unsafe(name):
            if group:
                yield key, group  # type: ignore[misc]
            raise ShardError(
                f"{where}: member {name!r} is not a sample member (absolute path, '..' or no "
                "key); expected names like <key>.image.npy"
            )
        k, suffix = split_name(name)
        if group and k != key:
            yield key, group  # type: ignore[misc]
            group = []
        key = k
        group.append((suffix, data))
    if group:
        yield key, group  # type: ignore[misc]


def _check_member(at: str, suffix: str, data: Any, want: str) -> None:
    got = member_checksum(data)
    if got != want:
        raise ChecksumMismatch(
            f"{at}: member .{suffix} fails its checksum (expected xxh3-64 {want}, got {got}); "
            "the shard is corrupt"
        )


def check_deferred(sample: dict[str, Any]) -> None:
    """Check the members ``iter_samples`` left unchecked (``defer``); raises
    ``ChecksumMismatch`` naming the shard, key and member."""
    for at, suffix, data, want in sample.pop("__unchecked__", ()):
        _check_member(at, suffix, data, want)


def _decode_sample(
    key: str,
    members: list,
    checks: tuple[str, ...] | None,
    where: str,
    require: tuple[str, ...],
    defer: tuple[str, ...] = (),
    shape: tuple[int, ...] | None = None,
) -> dict[str, Any]:
    at = f"{where} key {key}"
    unchecked = []
    if checks is not None:
        if len(checks) != len(members):
            raise ChecksumMismatch(
                f"{at}: expected {len(checks)} members, found {len(members)} "
                f"({', '.join(s for s, _ in members)})"
            )
        for (suffix, data), want in zip(members, checks, strict=True):
            if suffix in defer:
                unchecked.append((at, suffix, data, want))
            else:
                _check_member(at, suffix, data, want)
    sample: dict[str, Any] = {"__key__": key}
    if unchecked:
        sample["__unchecked__"] = unchecked
    for suffix, data in members:
        sample[suffix] = decode_member(suffix, data, where=at)
    missing = [r for r in require if r not in sample]
    if missing:
        raise ShardError(
            f"{at}: no {', '.join(missing)} member; found {', '.join(s for s, _ in members)}"
        )
    _check_arrays(sample, at, shape)
    return sample


def _check_arrays(sample: dict[str, Any], at: str, shape: tuple[int, ...] | None) -> None:
    """Refuse arrays no streamvol writer makes (a foreign or broken writer's checksums match
    them): a real (z, y, x) image of the manifest's stored shape, a mask of its shape, and
    points as (N, 4) rows z, y, x, class."""
    image, mask = sample.get("image.npy"), sample.get("mask.npy")
    points = sample.get("points.npy")
    wants = []
    if image is not None:
        if image.ndim != 3 or image.dtype.kind not in "uif" or not image.dtype.isnative:
            got = f"{image.dtype.str} of shape {image.shape}"
            wants.append(f"image.npy {got}: expected real (z, y, x) in native byte order")
        elif shape is not None and image.shape != shape:
            wants.append(f"image.npy of shape {image.shape}: expected the stored shape {shape}")
    if mask is not None and (
        image is None or mask.shape != image.shape or mask.dtype.kind not in "biu"
    ):
        got = f"{mask.dtype} of shape {mask.shape}"
        wants.append(f"mask.npy {got}: expected integer labels of the image's shape")
    if points is not None and (
        points.ndim != 2 or points.shape[1] != 4 or points.dtype.kind not in "iuf"
    ):
        got = f"{points.dtype} of shape {points.shape}"
        wants.append(f"points.npy {got}: expected (N, 4) rows of z, y, x, class")
    if wants:
        raise ShardError(f"{at}: {'; '.join(wants)}")


def iter_samples(
    fileobj: Any,
    where: str,
    *,
    expect: Expected | None = None,
    limit: int | None = None,
    bad: str = "raise",
    require: tuple[str, ...] = REQUIRED,
    defer: tuple[str, ...] = (),
) -> Iterator[dict[str, Any]]:
    """Decode samples from a tar stream positioned at a member header.

    ``defer``: members whose checksum is left to ``check_deferred`` (the loader checks a stored
    block just before it augments it, in place of the pass that brings it into the CPU's
    caches, so the check costs next to nothing).

    ``expect`` (from the manifest) checks every sample's key, its members' checksums, and that
    the shard ends where the manifest says; ``limit`` stops after that many samples otherwise.
    A sample that fails its checksum, lacks a ``require``-d member or holds a member that is
    not decoded raises ``ShardError`` naming ``where`` and its key, or with ``bad="yield"``
    comes out as ``{"__key__": key, "__error__": exc}`` while the samples after it read on.
    Truncation and corruption of the tar itself always raise.
    """
    if expect is not None:
        limit = len(expect.keys)
    done = 0
    if limit == 0:
        return
    try:
        for key, members in _samples(read_members(fileobj, where), where):
            if expect is not None:
                if done == len(expect.keys):
                    raise ShardError(
                        f"{where}: sample {key!r} follows the last one the manifest lists "
                        f"({expect.keys[-1]!r}); the tar holds more samples than the manifest"
                    )
                if key != expect.keys[done]:
                    raise ShardError(
                        f"{where}: expected sample {expect.keys[done]!r} here, found {key!r}; "
                        "the shard does not match its manifest"
                    )
            checks = None if expect is None or expect.checksums is None else expect.checksums
            try:
                sample = _decode_sample(
                    key,
                    members,
                    None if checks is None else checks[done],
                    where,
                    require,
                    defer,
                    None if expect is None else expect.shape,
                )
            except ShardError as exc:
                if bad != "yield":
                    raise
                sample = {"__key__": key, "__error__": exc}
            done += 1
            yield sample
            if done == limit and not (expect is not None and expect.last):
                return
    except OSError as exc:
        raise ShardError(f"{where}: unreadable tar: {exc}") from exc
    if limit is not None and done < limit:
        raise ShardError(
            f"{where}: expected {limit} samples, found {done}; the tar holds fewer samples "
            "than the manifest (truncated shard?)"
        )


def iter_tar(path: str | Path, record: dict[str, Any] | None = None) -> Iterator[dict[str, Any]]:
    """Yield decoded samples (dicts keyed by member suffix plus ``__key__``) from a local tar;
    with its manifest ``record``, every key and member checksum is checked against it."""
    expect = Expected.of(record) if record is not None else None
    with MappedFile(path) as f:
        yield from iter_samples(f, str(path), expect=expect)
