"""Faithfulness and cost of explanations (``model.explain``) on one dataset.

A SASRec (few epochs, one torch thread) is trained on every event of the dataset, or loaded
from ``--model-dir``. For ``--users`` users drawn at random, the model's top recommendation
(history items left out) is explained; then the ``k`` (1, 2, 3) events ranked highest by
occlusion, by the attention view (rollout, and the last block alone), or drawn at random
(from the whole history, and from the events the model reads, the latest ``max_len``), are
deleted, the history encoded again, and the drop of the item's score and rank (among the
items not in the original history; rank 1 before) is recorded. Attention is compared with
occlusion on the same users (top-1 agreement, Spearman correlation over the events the
model reads); ``dethroned`` is the share of users whose item is no longer first. The cost
of one explanation (occlusion + attention + attributes, as ``model.explain`` runs it) is
timed. Nothing here looks at held-out events.

    .venv/bin/python benchmarks/explain_faithfulness.py --data PATH --name NAME \\
        [--users 300] [--epochs 10] [--model-dir DIR]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.stats import spearmanr

from evorec.data.histories import Histories
from evorec.data.load import load_dataset
from evorec.io import write_atomic_text
from evorec.models import SASRec
from evorec.models.base import Recommender
from evorec.models.explain import attention_weights, drop_events, explain_history, occlude

KS = (1, 2, 3)
RANDOM_DRAWS = 3  # random deletions per user and k


def top_positions(attribution: np.ndarray, k: int) -> np.ndarray:
    """The ``k`` events of highest attribution (ties: the most recent first)."""
    positions = np.arange(len(attribution))
    return np.lexsort((-positions, -attribution))[:k]


def score_and_rank(
    model: Recommender, history: Histories, dropped: np.ndarray, item: int, seen: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The item's score and rank (among items not in ``seen``) for each deletion mask."""
    vectors = model.item_vectors()
    interest = model.encode(drop_events(history, dropped))
    scores = interest @ vectors.T
    scores[:, seen] = -np.inf
    own = scores[:, item]
    return own, 1 + (scores > own[:, None]).sum(1)


def user_case(model: SASRec, history: Histories, rng: np.random.Generator) -> dict[str, Any] | None:
    """Deletion results of every method for one user's history; None when too short."""
    n = int(history.lengths[0])
    if n < max(KS) + 1:
        return None
    occlusion = occlude(model, history, recent=None)
    vectors = model.item_vectors()
    seen = np.unique(history[0])
    scores = vectors @ occlusion.full
    scores[seen] = -np.inf
    item = int(np.argmax(scores))
    base = float(scores[item])
    occluded = occlusion.score_changes(vectors[[item]].astype(np.float64))[1][:, 0]
    rollout = attention_weights(model, history, "rollout")
    last = attention_weights(model, history, "last")
    window = min(n, model.config.max_len)
    methods = {"occlusion": occluded, "attention_rollout": rollout, "attention_last": last}
    masks, labels = [], []
    for name, attribution in methods.items():
        for k in KS:
            mask = np.zeros(n, dtype=bool)
            mask[top_positions(attribution, k)] = True
            masks.append(mask)
            labels.append((name, k))
    for name, low in (("random", 0), ("random_read", n - window)):
        for k in KS:
            for _ in range(RANDOM_DRAWS):
                mask = np.zeros(n, dtype=bool)
                mask[rng.choice(np.arange(low, n), size=min(k, n - low), replace=False)] = True
                masks.append(mask)
                labels.append((name, k))
    own, ranks = score_and_rank(model, history, np.stack(masks), item, seen)
    out: dict[str, Any] = {"score": base}
    for (name, k), score, rank in zip(labels, own, ranks, strict=True):
        row = out.setdefault(name, {}).setdefault(
            k, {"score_drop": [], "rank_drop": [], "dethroned": []}
        )
        row["score_drop"].append(base - float(score))
        row["rank_drop"].append(int(rank) - 1)
        row["dethroned"].append(float(rank > 1))
    read = slice(n - window, n)
    for name in ("attention_rollout", "attention_last"):
        attention = methods[name][read]
        out[f"{name}_top1_agrees"] = bool(
            top_positions(attention, 1)[0] == top_positions(occluded[read], 1)[0]
        )
        rho = spearmanr(attention, occluded[read]).statistic if window > 2 else np.nan
        out[f"{name}_spearman"] = float(rho)
    out["random_top1_agrees"] = float(1.0 / window)
    return out


def summarise(cases: list[dict[str, Any]]) -> dict[str, Any]:
    """Means over users of every curve; agreement and correlation of the attention views."""
    summary: dict[str, Any] = {}
    for name in ("occlusion", "attention_rollout", "attention_last", "random", "random_read"):
        summary[name] = {
            str(k): {
                metric: float(np.mean([np.mean(c[name][k][metric]) for c in cases]))
                for metric in ("score_drop", "rank_drop", "dethroned")
            }
            for k in KS
        }
    for name in ("attention_rollout", "attention_last"):
        summary[f"{name}_vs_occlusion"] = {
            "top1_agreement": float(np.mean([c[f"{name}_top1_agrees"] for c in cases])),
            "spearman_mean": float(np.nanmean([c[f"{name}_spearman"] for c in cases])),
        }
    summary["random_top1_agreement"] = float(np.mean([c["random_top1_agrees"] for c in cases]))
    random_drop = summary["random"]["1"]["rank_drop"]
    summary["occlusion_rank_drop_vs_random_k1"] = (
        summary["occlusion"]["1"]["rank_drop"] / random_drop if random_drop else None
    )
    read_drop = summary["random_read"]["1"]["rank_drop"]
    summary["occlusion_rank_drop_vs_random_read_k1"] = (
        summary["occlusion"]["1"]["rank_drop"] / read_drop if read_drop else None
    )
    return summary


def timings(model: SASRec, histories: Histories, rows: np.ndarray) -> dict[str, float]:
    """Median milliseconds of one explanation (as ``model.explain`` runs it), and of its
    occlusion and attention parts alone."""
    parts: dict[str, list[float]] = {"explain": [], "occlusion": [], "attention": []}
    for row in rows:
        history = histories.take([row])
        for name, run in (
            ("explain", lambda h=history: explain_history(model, h, top=10)),
            ("occlusion", lambda h=history: occlude(model, h)),
            ("attention", lambda h=history: attention_weights(model, h)),
        ):
            began = time.perf_counter()
            run()
            parts[name].append(1000 * (time.perf_counter() - began))
    return {f"{name}_ms_median": float(np.median(values)) for name, values in parts.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--name", required=True, help="dataset label for the results file")
    parser.add_argument("--users", type=int, default=300)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model-dir", type=Path, help="load the model here, or save it here")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(1)
    out_path = args.out or Path(f"benchmarks/results/explain-faithfulness-{args.name}.json")
    settings = {"epochs": args.epochs, "dim": 64, "max_len": 50, "device": "cpu", "seed": 0}
    began = time.perf_counter()
    if args.model_dir is not None and args.model_dir.exists():
        model = Recommender.load(args.model_dir)
        assert isinstance(model, SASRec)
        dataset = model.fitted_dataset()
    else:
        dataset = load_dataset(args.data)
        model = SASRec(settings).fit(dataset)
        if args.model_dir is not None:
            model.save(args.model_dir)
    train_seconds = time.perf_counter() - began
    rng = np.random.default_rng(args.seed)
    histories = dataset.histories
    eligible = np.flatnonzero(histories.lengths > max(KS))
    users = rng.choice(eligible, size=min(args.users, len(eligible)), replace=False)
    cases = [c for u in users if (c := user_case(model, histories.take([u]), rng)) is not None]
    result = {
        "data": args.data,
        "stats": dataset.stats(),
        "model": "sasrec",
        "settings": settings,
        "train_seconds": round(train_seconds, 1),
        "users": len(cases),
        "seed": args.seed,
        "random_draws": RANDOM_DRAWS,
        **summarise(cases),
        "cost": timings(model, histories, users[:100]),
        "note": "timings on a shared 2-core machine with other processes running, one torch thread",
    }
    write_atomic_text(out_path, json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
