"""Typed configuration of the item index used to retrieve top-K items."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from evorec.errors import ConfigError, first_validation_error

IndexKind = Literal["exact", "hnsw", "ivf", "sq8", "pq"]


class RetrievalConfig(BaseModel):
    """How top-K items are found for interest vectors: exactly or with an ANN index."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["auto", "exact", "hnsw", "ivf", "sq8", "pq"] = Field(
        "auto",
        description="auto: exact up to ann_threshold items, HNSW above; sq8 and pq are IVF "
        "indexes holding 8-bit scalar-quantised or product-quantised vectors",
    )
    ann_threshold: int = Field(
        100_000, ge=0, description="catalogue size above which auto uses HNSW"
    )
    exact_max_allowed: int = Field(
        50_000,
        ge=0,
        description="allow-lists of at most this many items are scored exactly, not by ANN",
    )
    hnsw_m: int = Field(16, ge=2, le=256, description="HNSW graph degree (M)")
    ef_construction: int = Field(100, ge=1, description="HNSW build beam width (efConstruction)")
    ef_search: int = Field(
        128, ge=1, description="HNSW beam (efSearch) beyond the items fetched per query"
    )
    nlist: int | None = Field(
        None, ge=1, description="IVF cells; default 4·sqrt(items), at most items/39"
    )
    nprobe: int = Field(32, ge=1, description="IVF cells scanned per query")
    pq_m: int | None = Field(
        None, ge=1, description="PQ sub-vectors per item vector (1 byte each); default dim/4"
    )
    train_size: int = Field(
        200_000, ge=1, description="IVF k-means training sample (items drawn at random)"
    )
    seed: int = 0

    def resolved_kind(self, n_items: int) -> IndexKind:
        """The index kind used for a catalogue of ``n_items`` items."""
        if self.kind == "auto":
            return "hnsw" if n_items > self.ann_threshold else "exact"
        return self.kind


def retrieval_config(config: RetrievalConfig | dict[str, Any] | None = None) -> RetrievalConfig:
    """A validated :class:`RetrievalConfig`; bad values raise :class:`ConfigError`."""
    if isinstance(config, RetrievalConfig):
        return config
    try:
        return RetrievalConfig(**(config or {}))
    except ValidationError as exc:
        raise ConfigError(f"invalid retrieval config: {first_validation_error(exc)}") from None
