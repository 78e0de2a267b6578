"""Safe decoding of shard members: ``.npy`` without pickles, ``.json``, ``.cls`` and text only.

Anything else (``.pyd``, ``.pickle``, ``.pth``, ...) is refused by name: a shard is data, never
code.
"""

from __future__ import annotations

import io
import json
import mmap
import os
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from streamvol.errors import ShardError, UnsafeMember

SAFE_SUFFIXES = ("npy", "json", "cls", "txt")


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
        raise ValueError(f"not a .npy member (format version {version or 'missing'})")
    shape, fortran, dtype = _npy_header(view[:end].tobytes(), read_header)
    if dtype.hasobject:
        raise ValueError("object arrays need pickle, which streamvol never loads")
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


def read_members(fileobj: Any, where: str) -> Iterator[tuple[str, np.ndarray]]:
    """(name, data) of each regular file in a tar stream positioned at a header.

    A direct reader (one ``readinto`` per member, or a view of a ``MappedFile``; checksums
    verified): the streaming mode of ``tarfile`` costs several milliseconds per large member.
    Handles ustar, GNU long names and pax path records; ends at the end-of-archive block, and a
    stream that stops before it is reported truncated.
    """
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


def iter_samples(
    fileobj: Any, where: str, *, limit: int | None = None, first_key: str | None = None
) -> Iterator[dict[str, Any]]:
    """Decode samples from a tar stream positioned at a member header.

    Stops after ``limit`` samples; ``first_key`` checks the stream starts where the index says.
    Truncation and corruption raise ``ShardError`` naming ``where``.
    """
    sample: dict[str, Any] = {}
    done = 0
    try:
        for name, data in read_members(fileobj, where):
            key, suffix = split_name(name)
            if sample and key != sample["__key__"]:
                yield sample
                done += 1
                sample = {}
                if limit is not None and done >= limit:
                    return
            if not sample and first_key is not None and done == 0 and key != first_key:
                raise ShardError(
                    f"{where}: expected sample {first_key!r} at this offset, found {key!r}; "
                    "the shard does not match its manifest"
                )
            sample.setdefault("__key__", key)
            sample[suffix] = decode_member(suffix, data, where=f"{where} key {key}")
    except OSError as exc:
        raise ShardError(f"{where}: unreadable tar: {exc}") from exc
    if sample:
        yield sample
        done += 1
    if limit is not None and done < limit:
        raise ShardError(f"{where}: expected {limit} samples, found {done}; truncated shard?")


def iter_tar(path: str | Path) -> Iterator[dict[str, Any]]:
    """Yield decoded samples (dicts keyed by member suffix plus ``__key__``) from a local tar."""
    with MappedFile(path) as f:
        yield from iter_samples(f, str(path))
