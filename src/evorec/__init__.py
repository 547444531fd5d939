"""evorec: learn how users' interests evolve and recommend from it.

Python API (mirrors the CLI)::

    import evorec
    data = evorec.load_dataset("Beauty.txt")
    split = evorec.leave_one_out(data)
    model = evorec.SASRec(epochs=50).fit(split)
    evorec.evaluate(model, split.test).metrics
    model.recommend(users=["42"], k=10)
"""

__version__ = "0.1.0"

from evorec.config import RunConfig, load_run_config  # noqa: E402
from evorec.data.dataset import Dataset  # noqa: E402
from evorec.data.load import from_frame, load_dataset  # noqa: E402
from evorec.data.preprocess import PreprocessConfig  # noqa: E402
from evorec.data.split import EvalSet, Split, leave_one_out, temporal_split  # noqa: E402
from evorec.evaluation.evaluator import evaluate  # noqa: E402
from evorec.models import (  # noqa: E402
    EASE,
    HSTU,
    LSTM,
    BERT4Rec,
    Caser,
    GRU4Rec,
    MostPopular,
    Recommender,
    SASRec,
    TiSASRec,
    get_model_class,
)
from evorec.training.pipeline import train  # noqa: E402

load_model = Recommender.load

__all__ = [
    "BERT4Rec",
    "Caser",
    "EASE",
    "Dataset",
    "EvalSet",
    "GRU4Rec",
    "HSTU",
    "LSTM",
    "MostPopular",
    "PreprocessConfig",
    "Recommender",
    "RunConfig",
    "SASRec",
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
]
