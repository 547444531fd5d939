"""Retrieval: the top-K items for interest vectors, exact or with an ANN index (faiss)."""

from evorec.retrieval.config import RetrievalConfig, retrieval_config
from evorec.retrieval.index import (
    ExactIndex,
    HNSWIndex,
    ItemIndex,
    IVFIndex,
    build_index,
    exact_search,
    load_index,
    load_or_build_index,
)

__all__ = [
    "ExactIndex",
    "HNSWIndex",
    "IVFIndex",
    "ItemIndex",
    "RetrievalConfig",
    "build_index",
    "exact_search",
    "load_index",
    "load_or_build_index",
    "retrieval_config",
]
