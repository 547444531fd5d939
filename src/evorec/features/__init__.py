"""Item content features: attributes, numeric attributes and text, fused with the id
embedding into one item vector ``v`` for the sequence models."""

from __future__ import annotations

from evorec.features.encoder import Fusion, ItemEncoder
from evorec.features.items import FEATURE_KINDS, ItemFeatures, build_item_features, item_columns
from evorec.features.text import DEFAULT_TEXT_MODEL, TextEmbedder

__all__ = [
    "DEFAULT_TEXT_MODEL",
    "FEATURE_KINDS",
    "Fusion",
    "ItemEncoder",
    "ItemFeatures",
    "TextEmbedder",
    "build_item_features",
    "item_columns",
]
