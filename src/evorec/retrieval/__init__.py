"""Retrieval: the top-K items for interest vectors, exact or with an ANN index (faiss).

:func:`rank` (in :mod:`evorec.retrieval.ranking`) is the one ranking path, with every filter;
the indexes of :mod:`evorec.retrieval.index` are what it searches. The names load on first
use, so that importing :mod:`evorec.retrieval.ranking` (as every model does) does not load
faiss."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from evorec.retrieval.config import RetrievalConfig, retrieval_config
    from evorec.retrieval.index import (
        ExactIndex,
        HNSWIndex,
        ItemIndex,
        IVFIndex,
        build_index,
        load_index,
        load_or_build_index,
    )
    from evorec.retrieval.ranking import Fallback, Ranking, exact_search, rank

_HOMES = {
    "RetrievalConfig": "config",
    "retrieval_config": "config",
    "Fallback": "ranking",
    "Ranking": "ranking",
    "rank": "ranking",
    "ExactIndex": "index",
    "HNSWIndex": "index",
    "IVFIndex": "index",
    "ItemIndex": "index",
    "build_index": "index",
    "exact_search": "ranking",
    "load_index": "index",
    "load_or_build_index": "index",
}


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module 'evorec.retrieval' has no attribute {name!r}")
    return getattr(importlib.import_module(f"evorec.retrieval.{_HOMES[name]}"), name)


__all__ = [
    "ExactIndex",
    "Fallback",
    "HNSWIndex",
    "IVFIndex",
    "ItemIndex",
    "Ranking",
    "RetrievalConfig",
    "build_index",
    "exact_search",
    "load_index",
    "load_or_build_index",
    "rank",
    "retrieval_config",
]
