"""The fused item table: id embedding, attributes, numeric attributes and text, one vector
``v`` per item.

Each part is a ``[n_items, dim]`` matrix: the id embedding rows; the mean embedding of an
item's attribute tokens; a linear map of its numeric attributes; a linear projection of its
(frozen) text embedding. ``sum`` adds them, ``concat`` projects their concatenation back to
``dim``, ``gated`` mixes them with per-item softmax weights computed from the parts.

Items without training events get no id part, so they are represented by their content
alone (cold start), and in training their rows are zero (see :meth:`ItemEncoder.forward`).
``id_dropout`` drops the id part of random items during training so that the content parts
learn to stand on their own.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from evorec.features.items import ItemFeatures

Fusion = Literal["sum", "concat", "gated"]


class ItemEncoder(nn.Module):
    """Maps the id embedding table (padding row 0, items ``1..n_items``, then any extra
    rows such as BERT4Rec's ``[MASK]``) to the fused table; rows other than the items pass
    through unchanged."""

    def __init__(
        self,
        features: ItemFeatures,
        kinds: list[str],
        dim: int,
        fusion: Fusion = "sum",
        id_dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.n_items = features.n_items
        self.use_id = "id" in kinds
        self.fusion = fusion
        self.id_dropout = id_dropout
        # side data, rebuilt from ItemFeatures on load: not part of the state dict
        self.register_buffer("trained", torch.from_numpy(features.trained), persistent=False)
        parts = int(self.use_id)
        self.attributes: nn.EmbeddingBag | None = None
        if "attributes" in kinds:
            self.register_buffer(
                "attribute_offsets",
                torch.from_numpy(features.attribute_offsets[:-1]),
                persistent=False,
            )
            self.register_buffer(
                "attribute_values", torch.from_numpy(features.attribute_values), persistent=False
            )
            self.attributes = nn.EmbeddingBag(features.n_attributes, dim, mode="mean")
            nn.init.normal_(self.attributes.weight, std=dim**-0.5)
            parts += 1
        self.numeric: nn.Linear | None = None
        if "numeric" in kinds:
            self.register_buffer("numeric_values", torch.from_numpy(features.numeric), False)
            self.numeric = nn.Linear(features.numeric.shape[1], dim)
            parts += 1
        self.text: nn.Linear | None = None
        if "text" in kinds:
            self.register_buffer("text_values", torch.from_numpy(features.text), False)
            self.text = nn.Linear(features.text.shape[1], dim)
            parts += 1
        self.mix: nn.Linear | None = None
        if fusion == "concat":
            self.mix = nn.Linear(parts * dim, dim)
        elif fusion == "gated":
            self.mix = nn.Linear(parts * dim, parts)

    def parts(self, id_rows: torch.Tensor) -> list[torch.Tensor]:
        """The ``[n_items, dim]`` parts of every item, id part first."""
        out = []
        if self.use_id:
            keep = self.trained
            if self.training and self.id_dropout > 0:
                keep = keep & (torch.rand(self.n_items, device=keep.device) >= self.id_dropout)
            out.append(id_rows * keep[:, None].to(id_rows.dtype))
        if self.attributes is not None:
            out.append(self.attributes(self.attribute_values, self.attribute_offsets))
        if self.numeric is not None:
            out.append(self.numeric(self.numeric_values))
        if self.text is not None:
            out.append(self.text(self.text_values))
        return out

    def forward(self, table: torch.Tensor) -> torch.Tensor:
        parts = self.parts(table[1 : self.n_items + 1])
        if self.fusion == "sum":
            fused = torch.stack(parts).sum(0)
        elif self.fusion == "concat":
            fused = self.mix(torch.cat(parts, dim=1))
        else:
            weights = torch.softmax(self.mix(torch.cat(parts, dim=1)), dim=1)
            fused = (torch.stack(parts, dim=1) * weights[:, :, None]).sum(1)
        if self.training:
            # Items without training events are never targets: as full-softmax negatives
            # they would teach their content to score low. Zero rows give a constant logit
            # and no gradient, so their content vectors stay as the shared encoders make them.
            fused = fused * self.trained[:, None].to(fused.dtype)
        return torch.cat([table[:1], fused, table[self.n_items + 1 :]])
