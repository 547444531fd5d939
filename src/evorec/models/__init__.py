"""Recommenders, all under the contract of :class:`evorec.models.base.Recommender`.

Each model module registers its class (``@register``); importing them here fills
:data:`MODELS`, which the CLI, run configs and model loading look names up in."""

from __future__ import annotations

# ruff: noqa: I001 -- imported in the order of MODELS (CLI help, error messages)
from evorec.models.base import MODELS, ModelConfig, Recommender, get_model_class
from evorec.models.sequential import SequentialRecommender
from evorec.models.popular import MostPopular
from evorec.models.ease import EASE
from evorec.models.gru4rec import GRU4Rec
from evorec.models.sasrec import SASRec
from evorec.models.lstm import LSTM
from evorec.models.caser import Caser
from evorec.models.bert4rec import BERT4Rec
from evorec.models.tisasrec import TiSASRec
from evorec.models.hstu import HSTU
from evorec.models.lightgcn import LightGCN
from evorec.models.social import SocialSASRec
from evorec.models.multitask import MultiTask
from evorec.models.ensemble import Ensemble

__all__ = [
    "BERT4Rec",
    "Caser",
    "EASE",
    "Ensemble",
    "GRU4Rec",
    "HSTU",
    "LSTM",
    "LightGCN",
    "MODELS",
    "ModelConfig",
    "MostPopular",
    "MultiTask",
    "Recommender",
    "SASRec",
    "SequentialRecommender",
    "SocialSASRec",
    "TiSASRec",
    "get_model_class",
]
