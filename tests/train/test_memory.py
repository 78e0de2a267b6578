"""Memory before the first step: what a sample's forward pass keeps for the backward pass,
counted on the meta device, agrees with what autograd saves on the CPU; a step that will not
fit is warned about with a batch size that does, instead of the system killing the run."""

from __future__ import annotations

import copy
import warnings
from dataclasses import replace

import pytest
import torch
from typer.testing import CliRunner

from streamvol.cli import app
from streamvol.core.heap import keep_freed_memory
from streamvol.core.manifest import read_manifest
from streamvol.errors import MemoryWarning
from streamvol.models import SEResNet3D, UNet3D
from streamvol.train import TrainConfig, Trainer, setup


@pytest.fixture(autouse=True)
def _kept_again():
    """check_memory may give freed memory back: keep it again for the tests that follow."""
    yield
    keep_freed_memory()


def _saved_on_cpu(model: torch.nn.Module, crop: tuple[int, int, int]) -> int:
    """Bytes of the storages autograd saves in one real forward pass (the reference)."""
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        copy.deepcopy(model).train()(torch.zeros(1, 1, *crop))
    return sum(storages.values())


@pytest.mark.parametrize(
    "model", [UNet3D(num_classes=3, depth=2, base_width=4), SEResNet3D(num_classes=2)]
)
def test_activation_bytes_agree_with_what_autograd_saves(model):
    counted = setup.activation_bytes(model, (16, 16, 16))
    assert counted == pytest.approx(_saved_on_cpu(model, (16, 16, 16)), rel=1e-3)
    assert setup.activation_bytes(model, (16, 16, 16), half=True) == counted // 2
    assert next(model.parameters()).device.type == "cpu"  # the model itself is untouched


def test_a_step_that_does_not_fit_is_warned_with_a_batch_size_that_does(blob_shards, monkeypatch):
    config = TrainConfig(shards=str(blob_shards), model="simple_cnn", batch_size=8, workers=0)
    task = setup.resolve_task(config, read_manifest(str(blob_shards)))
    model = setup.build_model(config, task)
    per_sample = setup.activation_bytes(model, task.crop)
    cpu = torch.device("cpu")
    monkeypatch.setattr(setup, "available_memory", lambda device: int(per_sample * 1.2 * 4.5))
    fits = r"--batch-size 4 fits; with --accumulate 2, batches of 4 make updates of 8$"
    with pytest.warns(MemoryWarning, match=rf"at --batch-size 8, .*; {fits}"):
        figures = setup.check_memory(config, task, model, cpu, half=False)
    assert figures["need"] == 8 * per_sample and figures["gave_back"]  # glibc's defaults
    # 3 of 8 fit: 3 batches of 3 make the nearest update; a run that accumulates is told a batch
    monkeypatch.setattr(setup, "available_memory", lambda device: int(per_sample * 1.2 * 3.5))
    with pytest.warns(MemoryWarning, match=r"--accumulate 3, batches of 3 make updates of 9$"):
        setup.check_memory(config, task, model, cpu, half=False)
    with pytest.warns(MemoryWarning, match=r"--batch-size 3 fits$"):
        setup.check_memory(replace(config, accumulate=2), task, model, cpu, half=False)
    kept = per_sample * 8 * setup.KEPT  # what the step holds with freed memory kept
    with warnings.catch_warnings():
        warnings.simplefilter("error", MemoryWarning)
        for available, gave_back in ((int(kept) + 1, False), (int(kept) - 1, True)):
            monkeypatch.setattr(setup, "available_memory", lambda device, a=available: a)
            assert (
                setup.check_memory(config, task, model, cpu, half=False)["gave_back"] is gave_back
            )


def test_train_says_so_before_it_starts(blob_shards, monkeypatch, tmp_path):
    monkeypatch.setattr(setup, "available_memory", lambda device: 1024)
    args = ["train", str(blob_shards), "--model", "simple_cnn", "--epochs", "1", "--workers", "0"]
    args += ["--augment", "flips"]
    result = CliRunner().invoke(app, [*args, "--runs", str(tmp_path)])
    assert result.exit_code == 0, result.output
    warning, start = result.output.splitlines()[:2]
    assert warning.startswith("warning: a training step of simple_cnn on ")
    assert warning.endswith("smaller crops are needed") and start.startswith("simple_cnn for ")
    with pytest.warns(MemoryWarning):
        Trainer(TrainConfig(shards=str(blob_shards), workers=0, augment="flips"), tmp_path / "lib")
