"""The model-directory layout: directories written by earlier versions load and score as
they did when written."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from evorec.models import Recommender, SASRec

FIXTURES = Path(__file__).parent / "fixtures"


def test_directory_written_by_0_1_0_loads_and_scores_as_recorded() -> None:
    """``sasrec-v0.1.0`` was saved by evorec 0.1.0 before the layout moved to
    ``evorec.modeldir``; ``.expected.json`` holds the scores that version gave."""
    expected = json.loads((FIXTURES / "sasrec-v0.1.0.expected.json").read_text())
    model = Recommender.load(FIXTURES / "sasrec-v0.1.0")
    assert isinstance(model, SASRec)
    dataset = model.dataset
    assert dataset is not None
    histories = dataset.histories.take(dataset.encode_users(expected["users"]))
    np.testing.assert_allclose(model.score(histories).numpy(), expected["scores"], rtol=1e-6)
    top = model.recommend(users=expected["users"], k=3)
    assert top["user_id"].to_list() == expected["recommend"]["user_id"]
    assert top["item_id"].to_list() == expected["recommend"]["item_id"]
    np.testing.assert_allclose(top["score"].to_list(), expected["recommend"]["score"], rtol=1e-6)
