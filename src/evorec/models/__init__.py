"""Recommenders, all under the contract of :class:`evorec.models.base.Recommender`."""

from __future__ import annotations

from evorec.errors import ConfigError
from evorec.models.base import ModelConfig, Recommender
from evorec.models.bert4rec import BERT4Rec
from evorec.models.caser import Caser
from evorec.models.ease import EASE
from evorec.models.ensemble import Ensemble
from evorec.models.gru4rec import GRU4Rec
from evorec.models.hstu import HSTU
from evorec.models.lightgcn import LightGCN
from evorec.models.lstm import LSTM
from evorec.models.multitask import MultiTask
from evorec.models.popular import MostPopular
from evorec.models.sasrec import SASRec
from evorec.models.sequential import SequentialRecommender
from evorec.models.social import SocialSASRec
from evorec.models.tisasrec import TiSASRec

MODELS: dict[str, type[Recommender]] = {
    cls.name: cls
    for cls in (
        MostPopular,
        EASE,
        GRU4Rec,
        SASRec,
        LSTM,
        Caser,
        BERT4Rec,
        TiSASRec,
        HSTU,
        LightGCN,
        SocialSASRec,
        MultiTask,
        Ensemble,
    )
}
ALIASES = {"mostpop": "pop", "popular": "pop", "most_popular": "pop"}


def get_model_class(name: str) -> type[Recommender]:
    key = ALIASES.get(name.lower(), name.lower())
    if key not in MODELS:
        raise ConfigError(f"unknown model '{name}'; choose from {', '.join(MODELS)}")
    return MODELS[key]


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
