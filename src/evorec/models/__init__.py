"""Recommenders, all under the contract of :class:`evorec.models.base.Recommender`.

Each model module registers its class (``@register``); importing them here fills
:data:`MODELS`, which the CLI (its help too), run configs and model loading look names up
in. :func:`describe` gives each one's line in the models table of docs/architecture.md
(:func:`models_table`), which tests/test_docs.py keeps in step with the registry."""

from __future__ import annotations

import inspect
import re
import sys

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
from evorec.models.ensemble import Ensemble, Sharded

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
    "Sharded",
    "SocialSASRec",
    "TiSASRec",
    "describe",
    "get_model_class",
    "models_table",
]


def describe(cls: type[Recommender]) -> str:
    """A registered model in one sentence: the first of its module's docstring, or of its
    own where several registered models share the module."""
    shared = sum(other.__module__ == cls.__module__ for other in MODELS.values()) > 1
    doc = (cls.__doc__ if shared else None) or sys.modules[cls.__module__].__doc__ or ""
    paragraph = " ".join(inspect.cleandoc(doc).split("\n\n")[0].split())
    sentence = re.split(r"(?<=\.)\s", paragraph, maxsplit=1)[0]
    return re.sub(r":\w+:`~?([^`]+)`", r"`\1`", sentence)  # reST roles as plain code


def models_table() -> str:
    """The Markdown table of every registered model: name, class, :func:`describe`."""
    rows = ["| `--model` | class | what it is |", "|---|---|---|"]
    rows += [f"| `{name}` | `{cls.__name__}` | {describe(cls)} |" for name, cls in MODELS.items()]
    return "\n".join(rows)
