"""Drawn parameters: what both backends apply, as frozen values (one sample, or a batch).

``AugmentParams.matrix`` maps an OUTPUT voxel to a stored-block voxel (homogeneous 4x4, float64,
``scipy.ndimage.affine_transform`` semantics: output voxel ``o`` reads the block at
``matrix[:3, :3] @ o + matrix[:3, 3]``). ``inverse`` is its inverse, stored so both backends move
points with the very same numbers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from streamvol.errors import BadInput

__all__ = ["AugmentParams", "BatchParams", "stack_params"]


def _readonly(a: np.ndarray) -> np.ndarray:
    a = np.array(a, dtype=np.float64, copy=True)
    a.setflags(write=False)
    return a


@dataclass(frozen=True, slots=True, eq=False)
class AugmentParams:
    """One sample's draw. Neutral values (gamma 1, contrast 1, brightness 0, noise_std 0,
    blur_sigma 0, elastic None) mean the step was not drawn. ``noise_seed`` is a uint64 as a
    Python int; ``elastic`` is (3, g, g, g) displacements in stored voxels at control points
    spanning the output corner to corner."""

    matrix: np.ndarray
    inverse: np.ndarray
    stored_shape: tuple[int, int, int]
    out_shape: tuple[int, int, int]
    gamma: float = 1.0
    contrast: float = 1.0
    brightness: float = 0.0
    noise_std: float = 0.0
    blur_sigma: float = 0.0
    noise_seed: int = 0
    elastic: np.ndarray | None = None

    def __post_init__(self) -> None:
        matrix = np.asarray(self.matrix, dtype=np.float64)
        if matrix.shape != (4, 4):
            raise BadInput(f"expected a 4x4 matrix, got shape {matrix.shape}")
        object.__setattr__(self, "matrix", _readonly(matrix))
        object.__setattr__(self, "inverse", _readonly(self.inverse))
        object.__setattr__(self, "stored_shape", tuple(int(s) for s in self.stored_shape))
        object.__setattr__(self, "out_shape", tuple(int(s) for s in self.out_shape))
        object.__setattr__(self, "noise_seed", int(self.noise_seed) & (2**64 - 1))
        if self.elastic is not None:
            grid = _readonly(self.elastic)
            if grid.ndim != 4 or grid.shape[0] != 3:
                raise BadInput(f"expected an elastic grid of shape (3, g, g, g), got {grid.shape}")
            object.__setattr__(self, "elastic", grid)

    @classmethod
    def from_matrix(
        cls,
        matrix: np.ndarray,
        stored_shape: Sequence[int],
        out_shape: Sequence[int],
        **intensity: Any,
    ) -> AugmentParams:
        """Parameters for a given output -> stored matrix (3x4 or 4x4) and intensity values."""
        m = np.eye(4)
        given = np.asarray(matrix, dtype=np.float64)
        if given.shape not in ((3, 4), (4, 4)):
            raise BadInput(f"expected a 3x4 or 4x4 matrix, got shape {given.shape}")
        m[:3] = given[:3]
        return cls(m, np.linalg.inv(m), stored_shape, out_shape, **intensity)

    @classmethod
    def centre(cls, stored_shape: Sequence[int], out_shape: Sequence[int]) -> AugmentParams:
        """No augmentation: the output is the central ``out_shape`` of the stored block."""
        m = np.eye(4)
        m[:3, 3] = (np.asarray(stored_shape, float) - np.asarray(out_shape, float)) / 2
        return cls.from_matrix(m, stored_shape, out_shape)

    @property
    def needs_block_stats(self) -> bool:
        """Whether gamma or contrast is drawn: they read the whole stored block's min, max and
        mean, also when only a part of the block is resampled (``within``)."""
        return self.gamma != 1.0 or self.contrast != 1.0

    def reads(self) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
        """(start, stop) of the stored voxels the output can read: the box of the output's
        corners mapped by the matrix, its upper neighbours, and the elastic displacement,
        within the stored block. A stored block larger than that (a margin for any draw) need
        not be read whole (``within``)."""
        corners = np.array(
            [[z, y, x, 1.0] for z in (0, 1) for y in (0, 1) for x in (0, 1)], dtype=np.float64
        )
        corners[:, :3] *= np.asarray(self.out_shape, np.float64) - 1
        mapped = (self.matrix @ corners.T)[:3]
        reach = float(np.abs(self.elastic).max()) if self.elastic is not None else 0.0
        low = np.floor(mapped.min(axis=1) - reach).astype(np.int64)
        high = np.floor(mapped.max(axis=1) + reach).astype(np.int64) + 2
        shape = np.asarray(self.stored_shape)
        start = np.clip(low, 0, shape)
        stop = np.clip(high, start, shape)
        return tuple(start.tolist()), tuple(stop.tolist())  # type: ignore[return-value]

    def within(self, start: Sequence[int], stop: Sequence[int]) -> AugmentParams:
        """These parameters for the part ``[start, stop)`` of the stored block: the same output
        (to float64 rounding of the coordinates), read from that part alone, given the whole
        block's statistics when ``needs_block_stats`` (``apply_cpu(..., stats=...)``)."""
        shift = np.eye(4)
        shift[:3, 3] = -np.asarray(start, np.float64)
        matrix = shift @ self.matrix
        return AugmentParams(
            matrix,
            np.linalg.inv(matrix),
            tuple(b - a for a, b in zip(start, stop, strict=True)),
            self.out_shape,
            self.gamma,
            self.contrast,
            self.brightness,
            self.noise_std,
            self.blur_sigma,
            self.noise_seed,
            self.elastic,
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain numpy values (``torch.utils.data.default_collate`` stacks them)."""
        out: dict[str, Any] = {
            "matrix": np.array(self.matrix),
            "inverse": np.array(self.inverse),
            "gamma": self.gamma,
            "contrast": self.contrast,
            "brightness": self.brightness,
            "noise_std": self.noise_std,
            "blur_sigma": self.blur_sigma,
            "noise_seed": np.array(self.noise_seed, dtype=np.uint64).view(np.int64),
            "stored_shape": np.array(self.stored_shape),
            "out_shape": np.array(self.out_shape),
        }
        if self.elastic is not None:
            out["elastic"] = np.array(self.elastic)
        return out


@dataclass(frozen=True, slots=True, eq=False)
class BatchParams:
    """A batch of ``AugmentParams`` as tensors, to travel through a DataLoader and to a device.

    matrix, inverse (B, 4, 4) float64; gamma, contrast, brightness, noise_std, blur_sigma (B,)
    float64; noise_seed (B,) int64 holding the uint64 bits; elastic (B, 3, g, g, g) float64 or
    None (zeros for samples drawn without it); the shapes are shared by the batch.
    """

    matrix: Any
    inverse: Any
    gamma: Any
    contrast: Any
    brightness: Any
    noise_std: Any
    blur_sigma: Any
    noise_seed: Any
    elastic: Any
    stored_shape: tuple[int, int, int]
    out_shape: tuple[int, int, int]

    @classmethod
    def stack(cls, params: Sequence[AugmentParams]) -> BatchParams:
        """Stack per-sample parameters (all with the same stored and output shapes)."""
        import torch

        if not params:
            raise BadInput("expected at least one AugmentParams to stack, got none")
        first = params[0]
        for p in params:
            if p.stored_shape != first.stored_shape or p.out_shape != first.out_shape:
                raise BadInput(
                    f"a batch needs one stored and output shape; got {first.stored_shape} -> "
                    f"{first.out_shape} and {p.stored_shape} -> {p.out_shape}"
                )
        grids = [p.elastic for p in params if p.elastic is not None]
        elastic = None
        if grids:
            shape = grids[0].shape
            if any(g.shape != shape for g in grids):
                raise BadInput("a batch needs one elastic grid size")
            elastic = torch.from_numpy(
                np.stack([p.elastic if p.elastic is not None else np.zeros(shape) for p in params])
            )

        def column(name: str) -> Any:
            return torch.tensor([getattr(p, name) for p in params], dtype=torch.float64)

        seeds = np.array([p.noise_seed for p in params], dtype=np.uint64).view(np.int64)
        return cls(
            matrix=torch.from_numpy(np.stack([p.matrix for p in params])),
            inverse=torch.from_numpy(np.stack([p.inverse for p in params])),
            gamma=column("gamma"),
            contrast=column("contrast"),
            brightness=column("brightness"),
            noise_std=column("noise_std"),
            blur_sigma=column("blur_sigma"),
            noise_seed=torch.from_numpy(seeds.copy()),
            elastic=elastic,
            stored_shape=first.stored_shape,
            out_shape=first.out_shape,
        )

    @classmethod
    def from_collated(cls, batch: dict[str, Any]) -> BatchParams:
        """From ``default_collate`` applied to ``AugmentParams.to_dict()`` of each sample."""
        import torch

        def t(name: str, dtype: Any = torch.float64) -> Any:
            return torch.as_tensor(batch[name]).to(dtype)

        return cls(
            matrix=t("matrix"),
            inverse=t("inverse"),
            gamma=t("gamma"),
            contrast=t("contrast"),
            brightness=t("brightness"),
            noise_std=t("noise_std"),
            blur_sigma=t("blur_sigma"),
            noise_seed=t("noise_seed", torch.int64),
            elastic=t("elastic") if "elastic" in batch else None,
            stored_shape=tuple(int(v) for v in torch.as_tensor(batch["stored_shape"])[0]),
            out_shape=tuple(int(v) for v in torch.as_tensor(batch["out_shape"])[0]),
        )

    def __len__(self) -> int:
        return int(self.matrix.shape[0])

    def _map(self, each: Any) -> BatchParams:
        """The same shapes, with ``each`` applied to every per-sample tensor."""
        moved = {
            name: None if getattr(self, name) is None else each(getattr(self, name))
            for name in _PER_SAMPLE
        }
        return BatchParams(**moved, stored_shape=self.stored_shape, out_shape=self.out_shape)

    def to(self, device: Any, non_blocking: bool = False) -> BatchParams:
        """The same parameters on ``device``."""
        return self._map(lambda t: t.to(device, non_blocking=non_blocking))

    def take(self, index: Any) -> BatchParams:
        """The samples at ``index`` (an integer tensor or a slice), as a smaller batch."""
        return self._map(lambda t: t[index])

    def unstack(self) -> list[AugmentParams]:
        """Back to per-sample parameters (on the CPU)."""
        out = []
        seeds = self.noise_seed.cpu().numpy().view(np.uint64)
        for i in range(len(self)):
            out.append(
                AugmentParams(
                    self.matrix[i].cpu().numpy(),
                    self.inverse[i].cpu().numpy(),
                    self.stored_shape,
                    self.out_shape,
                    gamma=float(self.gamma[i]),
                    contrast=float(self.contrast[i]),
                    brightness=float(self.brightness[i]),
                    noise_std=float(self.noise_std[i]),
                    blur_sigma=float(self.blur_sigma[i]),
                    noise_seed=int(seeds[i]),
                    elastic=None if self.elastic is None else self.elastic[i].cpu().numpy(),
                )
            )
        return out


_PER_SAMPLE = (
    "matrix",
    "inverse",
    "gamma",
    "contrast",
    "brightness",
    "noise_std",
    "blur_sigma",
    "noise_seed",
    "elastic",
)


def stack_params(params: Sequence[AugmentParams]) -> BatchParams:
    """Stack per-sample parameters into a ``BatchParams`` (what the loader's collate calls)."""
    return BatchParams.stack(params)
