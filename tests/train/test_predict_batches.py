"""predict_batches keeps a segmentation set's voxel labels compact: every crop's labels and
targets are held at once, so they take the smallest integer dtype that holds their values."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from streamvol.train.evaluation import predict_batches, score


class Fixed(torch.nn.Module):
    """Logits that are the image's channels scaled: the prediction is known in advance."""

    def forward(self, x):
        return torch.cat([x[:, :1] * 0, x[:, :1], -x[:, :1]], dim=1)


def _batches(masks):
    rng = np.random.default_rng(0)
    for i, mask in enumerate(masks):
        image = torch.from_numpy(rng.normal(size=(2, 1, 4, 5, 6)).astype(np.float32))
        batch = {"image": image, "weight": torch.ones(2), "__key__": [f"c{i}a", f"c{i}b"]}
        if mask is not None:
            batch["mask"] = torch.from_numpy(mask)
        yield batch


TASK = SimpleNamespace(
    kind="segmentation", binary=False, num_classes=3, class_names=["b", "x", "y"]
)


def _run(masks):
    return predict_batches(Fixed(), _batches(masks), TASK, forward=lambda m, x: m(x))


@pytest.mark.parametrize(
    ("fill", "dtype"), [(None, np.uint8), (255, np.uint8), (-100, np.int8), (1000, np.int16)]
)
def test_labels_and_targets_take_the_smallest_dtype_and_keep_their_values(fill, dtype):
    rng = np.random.default_rng(1)
    masks = [rng.integers(0, 3, (2, 4, 5, 6)) for _ in range(2)]
    if fill is not None:
        masks[1][0, 0] = fill
    out = _run(masks)
    np.testing.assert_array_equal(out["targets"], np.concatenate(masks))
    assert out["targets"].dtype == dtype
    images = np.concatenate([b["image"].numpy()[:, 0] for b in _batches([None, None])])
    expected = np.where(images > 0, 1, np.where(images < 0, 2, 0))
    np.testing.assert_array_equal(out["scores"], expected)
    assert out["scores"].dtype == np.uint8


def test_compact_arrays_score_as_int64_ones_do():
    rng = np.random.default_rng(2)
    out = _run([rng.integers(0, 3, (2, 4, 5, 6)) for _ in range(3)])
    wide = {**out, "scores": out["scores"].astype(np.int64)}
    wide["targets"] = out["targets"].astype(np.int64)
    assert score(out, TASK) == score(wide, TASK)


def test_an_unlabelled_split_is_refused_after_compact_targets():
    out = _run([None, None])
    assert out["targets"].dtype == np.int8 and (out["targets"] == -1).all()
    with pytest.raises(ValueError, match="unlabelled crops"):
        score(out, TASK)


def test_the_plot_slice_is_the_one_with_the_most_true_or_predicted_foreground():
    """Crop 0: predicted foreground on z=1 (9 voxels) beats true foreground on z=3 (4 voxels);
    crop 1: 9 true voxels on z=3 beat a predicted one on z=0; a crop with none (an ignored
    voxel is none) keeps the middle slice."""
    image = torch.zeros(3, 1, 4, 5, 6)
    image[0, 0, 1, :3, :3] = 1.0  # Fixed predicts class 1 where the image is > 0
    image[1, 0, 0, 0, 0] = -0.5  # a lone class-2 voxel, fewer than the truth on z=3
    mask = torch.zeros(3, 4, 5, 6, dtype=torch.int64)
    mask[0, 3, :2, :2] = 1
    mask[1, 3, 1:4, 1:4] = 2
    mask[2, 0, 0, 0] = 255
    batch = {"image": image, "mask": mask, "weight": torch.ones(3), "__key__": ["a", "b", "c"]}
    out = predict_batches(Fixed(), [batch], TASK, forward=lambda m, x: m(x))
    np.testing.assert_array_equal(out["slice_z"], [1, 3, 2])
    np.testing.assert_array_equal(out["slices"], image[[0, 1, 2], 0, [1, 3, 2]].numpy())
