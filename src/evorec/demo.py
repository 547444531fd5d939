"""``evorec demo``: simulated drifting users -> SASRec and baselines -> how recs follow drift."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
from rich.console import Console
from rich.table import Table

from evorec.data.histories import Histories
from evorec.data.preprocess import PreprocessConfig, preprocess
from evorec.data.simulate import simulate
from evorec.data.split import leave_one_out
from evorec.evaluation.evaluator import evaluate
from evorec.models import get_model_class
from evorec.models.base import Recommender
from evorec.retrieval.ranking import exclude_seen

DEMO_MODELS = ("pop", "ease", "gru4rec", "sasrec")
CHECKPOINTS = (0.25, 0.5, 0.75, 1.0)


def topic_share(
    model: Recommender, histories: Histories, topics: np.ndarray, current: np.ndarray, k: int = 10
) -> float:
    """Mean share of each top-``k`` list on the user's true current dominant topic."""
    scores = model.score(histories).float()
    exclude_seen(scores, histories)
    top = scores.topk(k, dim=1).indices.numpy()
    return float((topics[top] == current[:, None]).mean())


def run_demo(
    out: Path, *, epochs: int = 30, users: int = 1500, seed: int = 0, console: Console
) -> None:
    console.rule("1. simulate users whose interests drift")
    sim = simulate(n_users=users, n_items=600, n_topics=12, seed=seed)
    sim.save(out / "data")
    dataset = preprocess(sim.raw, PreprocessConfig(min_user_events=5, min_item_events=5))
    console.print(
        f"{dataset.n_users} users, {dataset.n_items} items, {dataset.n_events} events "
        f"written to {out / 'data'} (true interest mixtures in truth.parquet)"
    )
    split = leave_one_out(dataset)

    console.rule("2. train and evaluate (leave-one-out, full ranking, seen items filtered)")
    models: dict[str, Recommender] = {}
    rows: dict[str, dict[str, float]] = {}
    for name in DEMO_MODELS:
        params = {"epochs": epochs, "patience": 5} if name in ("gru4rec", "sasrec") else {}
        model = get_model_class(name)(params).fit(split, progress=True)
        models[name] = model
        rows[name] = evaluate(model, split.test).metrics
    table = Table(title="test metrics")
    table.add_column("model")
    columns = ["HR@10", "NDCG@10", "MRR@10", "Coverage@10"]
    for column in columns:
        table.add_column(column, justify="right")
    for name, metrics in rows.items():
        table.add_row(name, *(f"{metrics[c]:.4f}" for c in columns))
    console.print(table)
    models["sasrec"].save(out / "model")

    console.rule("3. do recommendations follow the drift?")
    truth = sim.truth
    item_topic = dataset.items.sort("item_idx")["topic"].to_numpy()
    full = dataset.histories
    # True dominant topic at every position of each user's (preprocessed) history.
    dominant = (
        truth.with_columns(pl.col("mixture").list.arg_max().alias("dominant"))
        .group_by("user_id", maintain_order=True)
        .agg("dominant")
    )
    dominant_by_user = dict(
        zip(dominant["user_id"].to_list(), dominant["dominant"].to_list(), strict=True)
    )
    share = Table(title="share of top-10 on the user's current true topic (all users)")
    share.add_column("history seen")
    for name in models:
        share.add_column(name, justify="right")
    users = np.arange(dataset.n_users)
    original = dataset.user_ids.to_list()
    for fraction in CHECKPOINTS:
        cut = np.maximum((full.lengths * fraction).astype(np.int64), 1)
        hist = full.slice_each(0, cut)
        current = np.array(
            [dominant_by_user[original[u]][c - 1] for u, c in zip(users, cut, strict=True)]
        )
        share.add_row(
            f"{fraction:.0%}",
            *(f"{topic_share(m, hist, item_topic, current):.2f}" for m in models.values()),
        )
    console.print(share)

    console.rule("4. three drifting users, step by step (SASRec)")
    sasrec = models["sasrec"]
    switches = [len(set(dominant_by_user[original[u]])) for u in users]
    for user in np.argsort(switches, kind="stable")[::-1][:3]:
        topics = dominant_by_user[original[user]]
        table = Table(title=f"user {original[user]}")
        for column in ("after events", "true topic now", "top-10 topics (SASRec)"):
            table.add_column(column)
        for fraction in CHECKPOINTS:
            n = max(int(full.lengths[user] * fraction), 1)
            hist = full.take(np.array([user])).slice_each(0, n)
            top = sasrec.score(hist).float()
            exclude_seen(top, hist)
            rec_topics = item_topic[top.topk(10, dim=1).indices.numpy()[0]]
            counts = np.bincount(rec_topics)
            summary = ", ".join(f"t{t}×{counts[t]}" for t in np.argsort(-counts)[:3] if counts[t])
            table.add_row(str(n), f"t{topics[n - 1]}", summary)
        console.print(table)
    console.print(
        f"SASRec model saved to {out / 'model'}: try "
        f"`evorec recommend --model-dir {out / 'model'} --user {original[0]}`"
    )
