"""Where a run's tasks go: one dask task per shard, on local threads or processes or on a
``dask.distributed`` cluster; each task writes its shard, then the record a resumed run trusts
(or, for a set at a URL, puts the tar there)."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dask

from streamvol.shard.folder import STATE
from streamvol.shard.manifest import join, write_json_atomic
from streamvol.shard.plan import Crop
from streamvol.shard.write import Encoding, ShardRecord, ShardSource, write_shard

__all__ = ["UrlTarget", "dask_context", "run_tasks"]


@contextlib.contextmanager
def dask_context(workers: int | None, processes: bool, scheduler: str | None) -> Iterator[Any]:
    """Where every dask computation of a run goes: a distributed client, or local workers."""
    if scheduler:
        from distributed import Client

        with Client(scheduler) as client:
            yield client
        return
    with dask.config.set(scheduler="processes" if processes else "threads", num_workers=workers):
        yield None


def _task_write(
    out: Path,
    name: str,
    crops: list[Crop],
    sources: dict[str, ShardSource],
    encoding: Encoding,
    inputs: str,
) -> ShardRecord:
    """One dask task: write a shard under ``STATE``, then leave its record (with ``inputs``,
    what it was made from) so a crashed run can resume."""
    record = write_shard(out / STATE / name, crops, sources, encoding)
    record = dataclasses.replace(record, inputs=inputs)
    write_json_atomic(out / STATE / f"{name}.json", record.to_json())
    return record


@dataclass(frozen=True)
class UrlTarget:
    """Where the tasks of a set at an fsspec URL put their tars (with its storage options)."""

    url: str
    storage: dict[str, Any]


def _task_upload(
    target: UrlTarget,
    name: str,
    crops: list[Crop],
    sources: dict[str, ShardSource],
    encoding: Encoding,
    inputs: str,
) -> ShardRecord:
    """One dask task of a set at a URL: write the shard to a temporary file where the task
    runs (a cluster's worker too), put it at the URL whole, remove the file, then put its
    record under ``STATE`` so a stopped run's rerun keeps it (``remote``)."""
    import fsspec

    fs, root = fsspec.core.url_to_fs(target.url, **target.storage)
    with tempfile.TemporaryDirectory(prefix="streamvol-shard-") as folder:
        path = Path(folder) / name
        record = write_shard(path, crops, sources, encoding)
        fs.put_file(str(path), join(root, name))
    record = dataclasses.replace(record, inputs=inputs)
    fs.pipe_file(join(root, f"{STATE}/{name}.json"), json.dumps(record.to_json()).encode())
    return record


def run_tasks(
    todo: list[tuple[str, list[Crop]]],
    out: Path | UrlTarget,
    sources: dict[str, ShardSource],
    encoding: Encoding,
    client: Any,
    done: Callable[[ShardRecord], None],
    inputs: dict[str, str],
) -> None:
    """Run one dask task per shard, writing into the folder ``out`` (or putting each tar at a
    URL); ``done(record)`` is called as each shard finishes; ``inputs``: each shard's
    ``folder.shard_inputs``, kept in its record."""
    if not todo:  # a rerun of a finished set: nothing to write (nor to scatter)
        return
    task = _task_upload if isinstance(out, UrlTarget) else _task_write
    used = {c.source for _, crops in todo for c in crops}
    sources = {k: v for k, v in sources.items() if k in used}
    if client is not None:
        from distributed import as_completed

        shared = client.scatter(sources, broadcast=True)
        futures = [
            client.submit(
                task, out, name, crops, shared, encoding, inputs[name], key=f"shard-{name}"
            )
            for name, crops in todo
        ]
        for future in as_completed(futures):
            done(future.result())
        return
    from dask.callbacks import Callback

    class _Done(Callback):
        def _posttask(self, key, result, dsk, state, worker_id):
            if isinstance(result, ShardRecord):
                done(result)

    # traverse=False: the sources hold lazy dask arrays that each task slices itself; dask must
    # not compute them (whole volumes) as task inputs.
    shared = dask.delayed(sources, traverse=False)
    tasks = [  # named by their shard: dask runs them in the shards' order
        dask.delayed(task)(
            out, name, crops, shared, encoding, inputs[name], dask_key_name=f"shard-{name}"
        )
        for name, crops in todo
    ]
    with _Done():
        dask.compute(*tasks)
