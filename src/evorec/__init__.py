"""evorec: learn how users' interests evolve and recommend from it.

Python API (mirrors the CLI)::

    import evorec
    data = evorec.load_dataset("Beauty.txt")
    split = evorec.leave_one_out(data)
    model = evorec.SASRec(epochs=50).fit(split)
    evorec.evaluate(model, split.test).metrics
    model.recommend(users=["42"], k=10)
"""

from evorec.config import RunConfig, load_run_config
from evorec.data.dataset import Dataset
from evorec.data.load import from_frame, load_dataset
from evorec.data.preprocess import PreprocessConfig
from evorec.data.split import EvalSet, Split, leave_one_out, temporal_split
from evorec.evaluation.evaluator import evaluate
from evorec.models import (
    EASE,
    HSTU,
    LSTM,
    MODELS,
    BERT4Rec,
    Caser,
    Ensemble,
    GRU4Rec,
    LightGCN,
    MostPopular,
    MultiTask,
    Recommender,
    SASRec,
    Sharded,
    SocialSASRec,
    TiSASRec,
    get_model_class,
)
from evorec.training.pipeline import train  # importing evorec.training registers its loop
from evorec.version import __version__

load_model = Recommender.load

__all__ = [
    "BERT4Rec",
    "Caser",
    "EASE",
    "Dataset",
    "Ensemble",
    "EvalSet",
    "GRU4Rec",
    "HSTU",
    "LSTM",
    "LightGCN",
    "MODELS",
    "MostPopular",
    "MultiTask",
    "PreprocessConfig",
    "Recommender",
    "RunConfig",
    "SASRec",
    "Sharded",
    "SocialSASRec",
    "Split",
    "TiSASRec",
    "evaluate",
    "from_frame",
    "get_model_class",
    "leave_one_out",
    "load_dataset",
    "load_model",
    "load_run_config",
    "temporal_split",
    "train",
    "__version__",
]
