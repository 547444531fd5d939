"""Network trunks shared by several sequence models.

:class:`AttentionNetwork` (item and position embeddings, pre-norm self-attention blocks, a
final norm) is the trunk of SASRec, BERT4Rec, TiSASRec, social SASRec and multi-task;
:class:`RecurrentNetwork` (item embeddings, a GRU or LSTM stack, a projection) that of
GRU4Rec and LSTM. Parameter names are those of the saved state dicts: keep them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from evorec.models.sequential import EventFeatures, SequenceNetwork, SequentialConfig


class AttentionConfig(SequentialConfig):
    layers: int = Field(2, ge=1)
    heads: int = Field(1, ge=1)
    ffn_multiplier: int = Field(4, ge=1, description="feed-forward width = dim * multiplier")
    positions: Literal["from_start", "from_end"] = Field(
        "from_start",
        description="position embeddings counted from the first event, or back from the "
        "last one (the latest event always at position 0)",
    )
    norm: Literal["layer", "rms"] = Field(
        "layer", description="normalisation of the blocks and the output: LayerNorm or RMSNorm"
    )
    ffn: Literal["gelu", "swiglu"] = Field(
        "gelu", description="feed-forward of each block: a GELU MLP, or SwiGLU"
    )
    gated: bool = Field(
        False,
        description="scale each block's attention and feed-forward output by a sigmoid gate "
        "of its normed input (with norm rms and ffn swiglu: the LiGR block of eSASRec)",
    )


def norm_layer(kind: Literal["layer", "rms"], dim: int) -> nn.Module:
    return nn.RMSNorm(dim) if kind == "rms" else nn.LayerNorm(dim)


class SwiGLU(nn.Module):
    """``W_out(SiLU(W_a x) * W_b x)`` (Shazeer 2020), ``W_a`` and ``W_b`` in one matrix."""

    def __init__(self, dim: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.inner = nn.Linear(dim, 2 * hidden)
        self.drop = nn.Dropout(dropout)
        self.outer = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.inner(x).chunk(2, dim=-1)
        return self.outer(self.drop(F.silu(a) * b))


class SelfAttentionBlock(nn.Module):
    """Pre-norm Transformer block; attention through ``scaled_dot_product_attention``,
    causal unless an ``attn_mask`` (boolean, or float added to the scores) is given. With
    ``gated`` each branch's output is multiplied by ``sigmoid(W_g · normed input)``."""

    def __init__(
        self,
        dim: int,
        heads: int,
        ffn_dim: int,
        dropout: float,
        norm: Literal["layer", "rms"] = "layer",
        ffn: Literal["gelu", "swiglu"] = "gelu",
        gated: bool = False,
    ) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} is not divisible by heads {heads}")
        self.heads = heads
        self.dropout = dropout
        self.attn_norm = norm_layer(norm, dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.ffn_norm = norm_layer(norm, dim)
        self.ffn = (
            SwiGLU(dim, ffn_dim, dropout)
            if ffn == "swiglu"
            else nn.Sequential(
                nn.Linear(dim, ffn_dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(ffn_dim, dim)
            )
        )
        self.gates = nn.ModuleList(nn.Linear(dim, dim) for _ in range(2)) if gated else None
        self.drop = nn.Dropout(dropout)

    def gate(self, branch: int, normed: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
        """``output`` of branch 0 (attention) or 1 (feed-forward), gated when the block is."""
        if self.gates is None:
            return output
        return torch.sigmoid(self.gates[branch](normed)) * output

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        batch, length, dim = x.shape
        normed = self.attn_norm(x)
        q, k, v = (
            self.qkv(normed)
            .view(batch, length, 3, self.heads, dim // self.heads)
            .permute(2, 0, 3, 1, 4)
        )
        if attn_mask is not None and attn_mask.is_floating_point():
            attn_mask = attn_mask.to(q.dtype)  # bf16 under autocast
        # Right padding: causal masking alone keeps padding out of every real position.
        attended = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=attn_mask,
            is_causal=attn_mask is None,
            dropout_p=self.dropout if self.training else 0.0,
        )
        attended = self.out(attended.transpose(1, 2).reshape(batch, length, dim))
        x = x + self.drop(self.gate(0, normed, attended))
        normed = self.ffn_norm(x)
        return x + self.drop(self.gate(1, normed, self.ffn(normed)))


class AttentionNetwork(SequenceNetwork):
    """Item and position embeddings, a stack of self-attention blocks and a final norm.
    Row 0 of the table is padding."""

    def __init__(self, rows: int, config: AttentionConfig) -> None:
        super().__init__()
        self.scale = math.sqrt(config.dim)
        self.item_embedding = nn.Embedding(rows, config.dim, padding_idx=0)
        self.position_embedding = nn.Embedding(config.max_len, config.dim)
        self.positions_from_end = config.positions == "from_end"
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(
            SelfAttentionBlock(
                config.dim,
                config.heads,
                config.dim * config.ffn_multiplier,
                config.dropout,
                config.norm,
                config.ffn,
                config.gated,
            )
            for _ in range(config.layers)
        )
        self.norm = norm_layer(config.norm, config.dim)
        nn.init.normal_(self.item_embedding.weight, std=1.0 / self.scale)
        with torch.no_grad():
            self.item_embedding.weight[0].zero_()

    def embed(self, items: torch.Tensor) -> torch.Tensor:
        """Scaled item embeddings plus position embeddings (rows are right-padded)."""
        positions = torch.arange(items.shape[1], device=items.device)
        if self.positions_from_end:
            lengths = (items > 0).sum(1, keepdim=True)
            positions = (lengths - 1 - positions).clamp(min=0)
        return self.embed_items(items) * self.scale + self.position_embedding(positions)

    def attend(
        self, x: torch.Tensor, masks: Sequence[torch.Tensor | None] | None = None
    ) -> torch.Tensor:
        """Dropout, the blocks (block ``b`` gets ``masks[b]``; causal without) and the norm."""
        x = self.drop(x)
        for block, mask in zip(self.blocks, masks or [None] * len(self.blocks), strict=True):
            x = block(x, mask)
        return self.norm(x)


class RecurrentConfig(SequentialConfig):
    layers: int = Field(1, ge=1)


class RecurrentNetwork(SequenceNetwork):
    """Item embeddings, a stack of recurrent layers (GRU or LSTM) and a projection."""

    def __init__(self, n_items: int, config: RecurrentConfig, cell: type[nn.RNNBase]) -> None:
        super().__init__()
        self.item_embedding = nn.Embedding(n_items + 1, config.dim, padding_idx=0)
        self.drop = nn.Dropout(config.dropout)
        self.rnn = cell(config.dim, config.dim, num_layers=config.layers, batch_first=True)
        self.project = nn.Linear(config.dim, config.dim)

    def forward(self, items: torch.Tensor, features: EventFeatures | None = None) -> torch.Tensor:
        # Right padding: a forward recurrence never carries padding into real positions.
        hidden, _ = self.rnn(self.drop(self.embed_items(items)))
        return self.project(self.drop(hidden))
