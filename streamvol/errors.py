"""Every error (and warning) streamvol raises on bad input.

Each subclasses a builtin so callers can catch by kind (``except FileNotFoundError``), and each
message names the file, key or value and says what was expected.
"""

from __future__ import annotations


class StreamvolError(Exception):
    """Base of every streamvol error."""


class NoVolumeFound(StreamvolError, FileNotFoundError):
    """A path holds no volume streamvol can read."""


class UnreadableVolume(StreamvolError, ValueError):
    """A file exists but cannot be read as a volume (corrupt, truncated, wrong format)."""


class InconsistentSlices(StreamvolError, ValueError):
    """A folder of slices whose shapes or dtypes differ."""


class BadInput(StreamvolError, ValueError):
    """Data that is not what it must be: an array of the wrong shape or dtype, an empty or
    duplicated collection, a shard set or file (augment spec, ``state_dict``) that does not
    suit the job. Errors below name a more precise kind where there is one."""


class ShapeMismatch(StreamvolError, ValueError):
    """Two arrays that must share a shape do not (a mask and its image)."""


class BadLabels(StreamvolError, ValueError):
    """A label file (class CSV, pick file, spot table) that is malformed or names unknown ids."""


class BadVolumeValues(StreamvolError, ValueError):
    """A volume holding NaN or Inf, or otherwise unusable values."""


class CropTooLarge(StreamvolError, ValueError):
    """A crop that does not fit in its volume and no padding was asked for."""


class PointsOutsideVolume(StreamvolError, ValueError):
    """Picks or spots whose coordinates lie outside their volume."""


class ShardError(StreamvolError, ValueError):
    """A shard set that is corrupt, truncated, or was made by a different command."""


class ChecksumMismatch(ShardError):
    """A shard member whose bytes differ from the checksum recorded when it was written."""


class UnsafeMember(ShardError):
    """A shard member whose type streamvol refuses to decode (pickles, checkpoints, ...)."""


class FolderNotEmpty(StreamvolError, FileExistsError):
    """An output folder that holds files and is not to be replaced: ``option`` names the
    parameter that would replace it (``overwrite=True``; the CLI shows its flag)."""

    def __init__(self, path: object, option: str = "overwrite") -> None:
        self.path, self.option = path, option
        super().__init__(f"{path}: folder is not empty; pass {option}=True to replace it")


class FolderLocked(StreamvolError, FileExistsError):
    """An output folder another writer holds (its lock file names the process and host)."""


class NotEnoughSpace(StreamvolError, OSError):
    """Output that would not fit: more bytes than the target's free space or ``--max-bytes``."""


class StorageUnreachable(StreamvolError, OSError):
    """A URL its file system could not reach: credentials, endpoint, permission or network."""


class RunNotFound(StreamvolError, FileNotFoundError):
    """A path that is not a run folder (no ``config.json`` written by ``streamvol train``)."""


class LargeCropWarning(UserWarning):
    """A crop larger than its volume: most of each stored block is padding."""


class LargeOutputWarning(UserWarning):
    """Shards that store many times the voxels of their sources (overlapping blocks)."""


class LoaderTimeout(StreamvolError, TimeoutError):
    """Loader workers that sent no batch for longer than the loader's timeout."""


class RunError(StreamvolError, ValueError):
    """A run folder that cannot be started, resumed or used as asked (evaluating a run of
    another task, ...)."""


class CheckpointError(StreamvolError, ValueError):
    """A checkpoint that is missing, truncated or not a streamvol checkpoint."""


class MemoryWarning(UserWarning):
    """A training step will likely not fit in the device's memory."""


class SplitWarning(UserWarning):
    """A split had to fall back to something weaker than grouping by source."""


class PicksLeftOut(UserWarning):
    """Copick runs whose pick files are all of other users or sessions than those chosen."""


class MasksLeftOut(UserWarning):
    """Copick runs without the segmentation chosen as masks: not in the shard set."""


class BadOption(StreamvolError, ValueError):
    """A setting outside what it may be, named as the library's parameter (``lr=0.0``); the CLI
    shows it as its flag (``--lr 0.0``). ``name``, ``value`` and ``expected`` say which, what
    and what was expected."""

    def __init__(self, name: str, value: object, expected: str) -> None:
        self.name, self.value, self.expected = name, value, expected
        super().__init__(f"{name}={value!r}: {expected}")
