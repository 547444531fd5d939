"""Row-wise sparse optimisation of big item tables.

A dense AdamW step reads and writes every row of the item table and of its two moment
buffers, whether a batch touched the row or not: with a million items that is most of a
step's work. :class:`RowSparseAdamW` keeps AdamW for the dense parameters and runs
``torch.optim.SparseAdam`` (lazy Adam: only the rows present in the sparse gradient, their
moments updated when they are touched) on the parameters whose gradients are sparse (an
item table looked up with ``sparse=True``). It is one optimizer: one state dict, one
learning rate schedule, one ``step``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch


class RowSparseAdamW(torch.optim.Optimizer):
    """AdamW on ``dense`` parameters, SparseAdam on ``sparse`` ones (no weight decay on
    those: decaying every row is the dense work this avoids)."""

    def __init__(
        self,
        dense: Iterable[torch.nn.Parameter],
        sparse: Iterable[torch.nn.Parameter],
        *,
        lr: float,
        weight_decay: float = 0.0,
    ) -> None:
        self._dense = torch.optim.AdamW(list(dense), lr=lr, weight_decay=weight_decay)
        self._sparse = torch.optim.SparseAdam(list(sparse), lr=lr)
        super().__init__([*self._dense.param_groups, *self._sparse.param_groups], {"lr": lr})
        self._link()

    def _link(self) -> None:
        """The inner optimizers work on this one's groups and state (params are disjoint)."""
        n_dense = len(self._dense.param_groups)
        self._dense.param_groups = self.param_groups[:n_dense]
        self._sparse.param_groups = self.param_groups[n_dense:]
        self._dense.state = self._sparse.state = self.state

    @torch.no_grad()
    def step(self, closure: Any = None) -> None:  # type: ignore[override]
        self._dense.step()
        self._sparse.step()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self._link()
