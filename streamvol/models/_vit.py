"""``vit3d``: a patch-token Vision Transformer for volumes, classification or segmentation."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from streamvol.errors import BadInput, BadOption
from streamvol.models._common import check_input, classifier_outputs, segmentation_outputs
from streamvol.models._registry import register


class Attention(nn.Module):
    """Multi-head self-attention through ``F.scaled_dot_product_attention`` (fused kernels)."""

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        if dim % heads:
            raise BadOption("dim", dim, f"expected a multiple of heads={heads} (vit3d)")
        self.heads = heads
        self.dropout = dropout
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(
            qkv[0], qkv[1], qkv[2], dropout_p=self.dropout if self.training else 0.0
        )
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(LN(x)), then x + MLP(LN(x))."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, dropout: float) -> None:
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads, dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(
            nn.Linear(dim, hidden),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, dim),
            nn.Dropout(dropout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


@register("vit3d")
class ViT3D(nn.Module):
    """ViT: non-overlapping ``patch_size``-cubed tokens (6 or 8 voxels a side suit crops),
    learnable positional embeddings, pre-norm blocks.

    ``task="classify"``: ``(B, C, *input_shape) -> (B, num_outputs)`` from the CLS token
    (``pool="cls"``) or the mean of the patch tokens (``pool="mean"``).
    ``task="segment"``: ``(B, C, *input_shape) -> (B, num_classes, *input_shape)``: each token is
    projected back to its patch of voxels (a transposed conv with kernel = stride = patch size),
    then a 1x1x1 conv head gives per-voxel logits.
    The input must be exactly ``input_shape`` (the positional embeddings are per token), whose
    sides must be divisible by ``patch_size``.
    """

    def __init__(
        self,
        *,
        in_channels: int = 1,
        num_classes: int,
        input_shape: Sequence[int] = (48, 48, 48),
        patch_size: int = 8,
        dim: int = 192,
        depth: int = 6,
        heads: int = 3,
        mlp_ratio: float = 4.0,
        dropout: float = 0.0,
        task: Literal["classify", "segment"] = "classify",
        pool: Literal["cls", "mean"] = "cls",
        decoder_width: int = 32,
    ) -> None:
        super().__init__()
        if patch_size < 1:
            raise BadOption("patch_size", patch_size, "expected >= 1, 6 or 8 suit (vit3d)")
        self.input_shape = tuple(int(s) for s in input_shape)
        if len(self.input_shape) != 3 or any(s % patch_size for s in self.input_shape):
            raise BadOption(
                "input_shape",
                tuple(input_shape),
                f"expected (D, H, W) divisible by patch_size {patch_size} (vit3d)",
            )
        if task not in ("classify", "segment"):
            raise BadOption("task", task, "expected 'classify' or 'segment' (vit3d)")
        if pool not in ("cls", "mean"):
            raise BadOption("pool", pool, "expected 'cls' or 'mean' (vit3d)")
        self.in_channels = in_channels
        self.task = task
        self.use_cls = task == "classify" and pool == "cls"
        self.grid = tuple(s // patch_size for s in self.input_shape)
        n_tokens = math.prod(self.grid) + int(self.use_cls)

        self.patch_embed = nn.Conv3d(in_channels, dim, patch_size, stride=patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim)) if self.use_cls else None
        self.pos_embed = nn.Parameter(torch.zeros(1, n_tokens, dim))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        self.blocks = nn.Sequential(*(Block(dim, heads, mlp_ratio, dropout) for _ in range(depth)))
        self.norm = nn.LayerNorm(dim)
        self.head: nn.Module
        if task == "classify":
            self.num_outputs = classifier_outputs(num_classes)
            self.decoder = None
            self.head = nn.Linear(dim, self.num_outputs)
        else:
            self.num_outputs = segmentation_outputs(num_classes)
            self.decoder = nn.Sequential(
                nn.ConvTranspose3d(dim, decoder_width, patch_size, stride=patch_size), nn.GELU()
            )
            self.head = nn.Conv3d(decoder_width, self.num_outputs, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, self.in_channels, "vit3d")
        if tuple(x.shape[2:]) != self.input_shape:
            raise BadInput(
                f"vit3d: built for (B, C, {', '.join(map(str, self.input_shape))}), "
                f"got {tuple(x.shape)}"
            )
        b = x.shape[0]
        tokens = self.patch_embed(x).flatten(2).transpose(1, 2)  # (B, N, dim)
        if self.cls_token is not None:
            tokens = torch.cat([self.cls_token.expand(b, -1, -1), tokens], dim=1)
        tokens = self.norm(self.blocks(tokens + self.pos_embed))
        if self.decoder is None:
            feat = tokens[:, 0] if self.cls_token is not None else tokens.mean(dim=1)
            return self.head(feat)
        grid = tokens.transpose(1, 2).reshape(b, -1, *self.grid)
        return self.head(self.decoder(grid))
