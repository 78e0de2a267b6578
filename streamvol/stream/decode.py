"""Safe decoding of shard members: ``.npy`` without pickles, ``.json``, ``.cls`` and text only.

Anything else (``.pyd``, ``.pickle``, ``.pth``, ...) is refused by name: a shard is data, never
code.
"""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from streamvol.errors import ShardError, UnsafeMember

SAFE_SUFFIXES = ("npy", "json", "cls", "txt")


def split_name(name: str) -> tuple[str, str]:
    """``"a_z1_y2_x3.image.npy"`` -> (``"a_z1_y2_x3"``, ``"image.npy"``): split at the first dot."""
    key, _, suffix = name.partition(".")
    return key, suffix


def decode_member(suffix: str, data: bytes, *, where: str = "") -> Any:
    """Decode one member's bytes by its suffix; refuse every type that could run code."""
    kind = suffix.rsplit(".", 1)[-1]
    try:
        if kind == "npy":
            return np.load(io.BytesIO(data), allow_pickle=False)
        if kind == "json":
            return json.loads(data)
        if kind == "cls":
            return int(data.decode().strip())
        if kind == "txt":
            return data.decode()
    except (ValueError, UnicodeDecodeError) as exc:
        raise ShardError(f"{where}: member .{suffix} is corrupt: {exc}") from exc
    raise UnsafeMember(
        f"{where}: member .{suffix} is not a type streamvol decodes; "
        f"expected one of {', '.join('.' + s for s in SAFE_SUFFIXES)} (pickles are never loaded)"
    )


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
        with tarfile.open(fileobj=fileobj, mode="r|") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                key, suffix = split_name(member.name)
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
                handle = tar.extractfile(member)
                data = handle.read() if handle else b""
                if len(data) != member.size:
                    raise ShardError(f"{where}: truncated member {member.name}")
                sample.setdefault("__key__", key)
                sample[suffix] = decode_member(suffix, data, where=f"{where} key {key}")
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise ShardError(f"{where}: truncated or corrupt tar: {exc}") from exc
    if sample:
        yield sample
        done += 1
    if limit is not None and done < limit:
        raise ShardError(f"{where}: expected {limit} samples, found {done}; truncated shard?")


def iter_tar(path: str | Path) -> Iterator[dict[str, Any]]:
    """Yield decoded samples (dicts keyed by member suffix plus ``__key__``) from a local tar."""
    with open(path, "rb") as f:
        yield from iter_samples(f, str(path))
