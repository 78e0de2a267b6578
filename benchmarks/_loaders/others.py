"""The loaders streamvol is compared with: a seed project's torch Dataset (TIFF slices, scipy),
MONAI and TorchIO with their own transforms, and reading-only datasets over the same files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from _loaders.data import Data, read_slices
from _loaders.workload import FLIP_P, NOISE_STD, single_thread


def monai_worker_init(worker_id: int) -> None:
    from monai.data.utils import worker_init_fn

    single_thread(worker_id)
    worker_init_fn(worker_id)  # MONAI's own: reseeds the transforms per worker


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    from scipy.spatial.transform import Rotation

    return Rotation.random(random_state=rng).as_matrix()


class SeedStyle(Dataset):
    """A seed project's loader: read the TIFF slices, normalise, rotate with scipy (one
    trilinear ``affine_transform`` about the centre, zeros outside), flip, add numpy noise."""

    def __init__(self, folders: list[Path], mean: float, std: float, augment: bool) -> None:
        self.folders, self.mean, self.std, self.augment = folders, mean, std, augment

    def __len__(self) -> int:
        return len(self.folders)

    def __getitem__(self, i: int) -> torch.Tensor:
        from scipy import ndimage

        vol = (read_slices(self.folders[i]).astype(np.float32) - self.mean) / self.std
        if self.augment:
            rng = np.random.default_rng()
            rot = random_rotation(rng)
            centre = (np.array(vol.shape) - 1) / 2
            vol = ndimage.affine_transform(
                vol,
                rot,
                offset=centre - rot @ centre,
                order=1,
                mode="constant",
                cval=0.0,
                output=np.float32,
            )
            for axis in range(3):
                if rng.random() < FLIP_P:
                    vol = np.flip(vol, axis)
            std = rng.uniform(0.0, NOISE_STD)
            vol = vol + std * rng.standard_normal(vol.shape, dtype=np.float32)
        return torch.from_numpy(np.ascontiguousarray(vol))[None]


class NpyFiles(Dataset):
    """Reading only: one ``np.load`` per sample, normalised to float32."""

    def __init__(self, files: list[Path], mean: float, std: float) -> None:
        self.files, self.mean, self.std = files, mean, std

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> torch.Tensor:
        vol = (np.load(self.files[i]).astype(np.float32) - self.mean) / self.std
        return torch.from_numpy(vol)[None]


def monai_dataset(data: Data) -> Any:
    import monai
    from monai.transforms import (
        Compose,
        EnsureChannelFirst,
        LoadImage,
        NormalizeIntensity,
        RandFlip,
        RandGaussianNoise,
        RandRotate,
    )

    monai.data.set_track_meta(False)  # MONAI's fastest setting: plain tensors, no metadata
    pi = float(np.pi)
    transform = Compose(
        [
            LoadImage(image_only=True, reader="NumpyReader"),
            EnsureChannelFirst(channel_dim="no_channel"),
            NormalizeIntensity(subtrahend=data.mean, divisor=data.std, dtype=np.float32),
            RandRotate(
                range_x=pi,
                range_y=pi,
                range_z=pi,
                prob=1.0,
                keep_size=True,
                mode="bilinear",
                padding_mode="zeros",
                dtype=np.float32,
            ),
            *[RandFlip(prob=FLIP_P, spatial_axis=axis) for axis in range(3)],
            RandGaussianNoise(prob=1.0, mean=0.0, std=NOISE_STD, sample_std=True),
        ]
    )
    return monai.data.Dataset(data=[str(p) for p in data.npy], transform=transform)


class NpyReader:
    """TorchIO reader for .npy: a (1, D, H, W) tensor and an identity affine."""

    def __call__(self, path: Any) -> tuple[torch.Tensor, np.ndarray]:
        return torch.from_numpy(np.load(path)[None]), np.eye(4)


class Normalise:
    def __init__(self, mean: float, std: float) -> None:
        self.mean, self.std = mean, std

    def __call__(self, tensor: torch.Tensor) -> torch.Tensor:
        return (tensor.float() - self.mean) / self.std


def torchio_dataset(data: Data) -> Any:
    import torchio as tio

    subjects = [
        tio.Subject(image=tio.ScalarImage(p, reader=NpyReader(), check_nans=False))
        for p in data.npy
    ]
    transform = tio.Compose(
        [
            tio.Lambda(Normalise(data.mean, data.std)),
            tio.RandomAffine(
                scales=0,
                degrees=180,
                translation=0,
                image_interpolation="linear",
                default_pad_value=0,
            ),
            tio.RandomFlip(axes=(0, 1, 2), flip_probability=FLIP_P),
            tio.RandomNoise(mean=0, std=(0, NOISE_STD)),
        ]
    )
    return tio.SubjectsDataset(subjects, transform=transform)


def torch_loader(ds: Any, workers: int, batch: int, **options: Any) -> DataLoader:
    cls = options.pop("cls", DataLoader)
    options.setdefault("worker_init_fn", single_thread if workers else None)
    return cls(
        ds,
        batch_size=batch,
        shuffle=True,
        num_workers=workers,
        persistent_workers=workers > 0,
        **options,
    )
