"""The contract every registered model passes: shapes, backward, memory format, compile."""

from __future__ import annotations

import copy

import pytest
import torch

from streamvol import models
from tests.models.cases import CASES, Case

ids = [c.id for c in CASES]


def _x(case: Case, batch: int = 2, channels: int = 1) -> torch.Tensor:
    return torch.randn(batch, channels, *case.shape)


def test_every_registered_model_has_a_case() -> None:
    assert {c.name for c in CASES} == set(models.available())


@pytest.mark.parametrize("case", CASES, ids=ids)
class TestModelContract:
    def test_binary_and_multiclass_output_shapes(self, case: Case) -> None:
        for num_classes in (2, 5):
            model = models.build(case.name, num_classes=num_classes, **case.options)
            out = model(_x(case))
            if case.segment:
                assert out.shape == (2, num_classes, *case.shape)
            else:
                assert out.shape == (2, 1 if num_classes == 2 else num_classes)
            assert model.num_outputs == out.shape[1]
            assert torch.isfinite(out).all()

    def test_in_channels(self, case: Case) -> None:
        model = models.build(case.name, in_channels=2, num_classes=3, **case.options)
        assert model(_x(case, channels=2)).shape[:2] == (2, 3)

    def test_backward_reaches_every_parameter(self, case: Case) -> None:
        model = models.build(case.name, num_classes=3, **case.options)
        model(_x(case)).square().mean().backward()
        for name, p in model.named_parameters():
            assert p.grad is not None, name

    def test_head_swap_changes_outputs_and_keeps_encoder(self, case: Case) -> None:
        model = models.build(case.name, num_classes=2, **case.options)
        before = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("head.")}
        assert models.set_output_layer(model, 7) is model
        after = model.state_dict()
        for k, v in before.items():
            assert torch.equal(after[k], v), k
        assert model(_x(case)).shape[1] == 7 == model.num_outputs

    def test_channels_last_3d_matches_contiguous(self, case: Case) -> None:
        model = models.build(case.name, num_classes=3, **case.options).eval()
        x = _x(case)
        ref = model(x)
        cl = copy.deepcopy(model).to(memory_format=torch.channels_last_3d)
        out = cl(x.to(memory_format=torch.channels_last_3d))
        torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)

    @pytest.mark.parametrize(
        "shape", [(8, 8, 8), (2, 1, 8, 8), (2, 1, 1, 8, 8, 8)], ids=["3d", "4d", "6d"]
    )
    def test_wrong_rank_raises(self, case: Case, shape: tuple[int, ...]) -> None:
        model = models.build(case.name, num_classes=2, **case.options)
        with pytest.raises(ValueError, match=r"expected \(B, C, D, H, W\)"):
            model(torch.randn(*shape))

    def test_wrong_channels_raises(self, case: Case) -> None:
        model = models.build(case.name, num_classes=2, **case.options)
        with pytest.raises(ValueError, match="C=1"):
            model(_x(case, channels=3))

    @pytest.mark.slow
    def test_compiles_to_one_graph(self, case: Case) -> None:
        # fullgraph=True fails on any graph break (data-dependent control flow); the eager
        # backend keeps this fast and free of a C++ toolchain.
        model = models.build(case.name, num_classes=3, **case.options).eval()
        x = _x(case)
        compiled = torch.compile(model, backend="eager", fullgraph=True)
        torch.testing.assert_close(compiled(x), model(x))
