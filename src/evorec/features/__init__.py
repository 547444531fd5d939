"""Item content features (attributes, numeric attributes and text, fused with the id
embedding into one item vector ``v``) and user profiles (a vector added to the interest
vector ``i``) for the sequence models."""

from __future__ import annotations

from evorec.features.encoder import Fusion, ItemEncoder
from evorec.features.items import FEATURE_KINDS, ItemFeatures, build_item_features, item_columns
from evorec.features.text import DEFAULT_TEXT_MODEL, TextEmbedder
from evorec.features.users import UserEncoder, UserFeatures, build_user_features

__all__ = [
    "DEFAULT_TEXT_MODEL",
    "FEATURE_KINDS",
    "Fusion",
    "ItemEncoder",
    "ItemFeatures",
    "TextEmbedder",
    "UserEncoder",
    "UserFeatures",
    "build_item_features",
    "build_user_features",
    "item_columns",
]
