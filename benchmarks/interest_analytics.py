"""Interest timelines against the simulator's true interests, for several model families.

Per seed: simulate drifting users (`evorec data simulate`'s defaults: 500 items, 10 topics,
drift 0.1); train each model on the first `--train-users` users (leave-one-out, epochs on
validation); the other users, never seen in training, are split in half: shift-detection
settings (window, threshold) are chosen on the validation half by F1, and every figure is
measured on the test half:

- shift points detected from the events (Jensen-Shannon divergence between the windows
  before and after each event) against the true shifts: precision and recall within ±2;
- correlation of the model's timeline (topic shares of the top-10 after event t) with the
  true mixture behind event t + 1, pooled over users, steps and topics; beside it the
  observed mix of the last `window` events, a model-free estimate;
- lag: events seen from a true shift on until the top-10 holds >= 50% of the new topic
  (before the next shift; `reached` is the share of shifts where it does at all).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/interest_analytics.py \\
        --out benchmarks/results/interest-analytics-simulator.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import polars as pl
import torch

from evorec.analytics import ItemCategories, ShiftSettings, interest_timeline
from evorec.analytics.timeline import rolling_mix, shift_divergence, shift_points
from evorec.analytics.truth import adoption_lags, match_shifts, pearson, true_dominant, true_shifts
from evorec.data.dataset import Dataset
from evorec.data.histories import Histories
from evorec.data.preprocess import PreprocessConfig, preprocess
from evorec.data.schema import ITEM, TIME, USER
from evorec.data.simulate import simulate
from evorec.data.split import leave_one_out
from evorec.evaluation.evaluator import evaluate
from evorec.models import get_model_class

MODELS = ("pop", "gru4rec", "sasrec")
TOLERANCE = 2
TOP_N = 10
LEVEL = 0.5
WINDOWS = (3, 4, 5, 6, 8)
THRESHOLDS = tuple(float(round(t, 2)) for t in np.arange(0.2, 0.95, 0.05))


def held_out_users(sim_events: pl.DataFrame, truth: pl.DataFrame, users: list[int], train: Dataset):
    """(item indices, timestamps, true mixtures) of each held-out user, in the training
    dataset's item ids; a user with an item training never saw is left out."""
    known = {item: n for n, item in enumerate(train.item_ids.to_list())}
    rows = []
    for user in users:
        events = sim_events.filter(pl.col(USER) == user).sort(TIME)
        items = [known.get(i) for i in events[ITEM].to_list()]
        if None in items:
            continue
        mix = np.array(truth.filter(pl.col(USER) == user).sort("step")["mixture"].to_list())
        rows.append((np.array(items), events[TIME].to_numpy().astype(np.int64), mix))
    return rows


def one_row(items: np.ndarray, times: np.ndarray) -> Histories:
    return Histories(np.array([0, len(items)]), items, times)


def detection(users, member: np.ndarray, settings: ShiftSettings) -> dict[str, float]:
    """Precision, recall and F1 of the shift points over ``users``."""
    hits_d = hits_t = n_detected = n_true = 0
    for items, _times, mix in users:
        found = np.array(shift_points(shift_divergence(member[items], settings.window), settings))
        true = true_shifts(true_dominant(mix))
        d, t = match_shifts(found, true, TOLERANCE)
        hits_d, hits_t = hits_d + d, hits_t + t
        n_detected, n_true = n_detected + len(found), n_true + len(true)
    precision = hits_d / max(n_detected, 1)
    recall = hits_t / max(n_true, 1)
    f1 = 2 * precision * recall / max(precision + recall, 1e-12)
    return {
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "detected": n_detected,
        "true": n_true,
    }


def run_seed(seed: int, args: argparse.Namespace) -> dict:
    sim = simulate(n_users=args.users, seed=seed)
    users = np.arange(1, args.users + 1)
    train_users = users[: args.train_users]
    raw = sim.raw
    raw_train = type(raw)(
        raw.events.filter(pl.col(USER).is_in(train_users)),
        items=raw.items,
        has_time=True,
        name="simulated",
    )
    train = preprocess(raw_train, PreprocessConfig(min_user_events=1, min_item_events=1))
    categories = ItemCategories.from_dataset(train)
    assert categories.names == [f"topic {k}" for k in range(categories.n_categories)]
    rest = np.random.default_rng(seed).permutation(users[args.train_users :])
    half = len(rest) // 2
    valid = held_out_users(raw.events, sim.truth, sorted(rest[:half].tolist()), train)
    test = held_out_users(raw.events, sim.truth, sorted(rest[half:].tolist()), train)
    member = categories.membership

    grid = [
        (window, threshold, detection(valid, member, ShiftSettings(window, threshold))["f1"])
        for window in WINDOWS
        for threshold in THRESHOLDS
    ]
    window, threshold, valid_f1 = max(grid, key=lambda row: row[2])
    settings = ShiftSettings(window, threshold)
    out: dict = {
        "seed": seed,
        "valid_users": len(valid),
        "test_users": len(test),
        "shift_settings": {"window": window, "threshold": threshold, "valid_f1": valid_f1},
        "shifts": detection(test, member, settings),
        "models": {},
    }
    split = leave_one_out(train)
    observed_est, truth_next = [], []
    for items, _times, mix in test:
        observed_est.append(rolling_mix(member[items], window)[:-1])
        truth_next.append(mix[1:])
    out["observed_correlation"] = pearson(np.vstack(observed_est), np.vstack(truth_next))
    for name in args.models:
        params = {"seed": seed}
        if name in ("gru4rec", "sasrec"):
            params |= {"epochs": args.epochs, "patience": 5}
        start = time.perf_counter()
        model = get_model_class(name)(params).fit(split)
        fit_seconds = time.perf_counter() - start
        estimate, lags = [], []
        for items, times, mix in test:
            timeline = interest_timeline(
                model,
                one_row(items, times),
                categories,
                top_n=TOP_N,
                settings=settings,
                max_steps=len(items),
            )
            estimate.append(timeline.model_share[:-1])
            lags.extend(adoption_lags(timeline.model_share, true_dominant(mix), LEVEL))
        reached = [lag for lag in lags if lag is not None]
        out["models"][name] = {
            "test_ndcg@10": evaluate(model, split.test).metrics["NDCG@10"],
            "correlation": pearson(np.vstack(estimate), np.vstack(truth_next)),
            "shifts": len(lags),
            "reached": len(reached) / max(len(lags), 1),
            "median_lag": float(np.median(reached)) if reached else None,
            "mean_lag": float(np.mean(reached)) if reached else None,
            "fit_seconds": round(fit_seconds, 1),
        }
        print(f"seed {seed} {name}: {json.dumps(out['models'][name])}", flush=True)
    print(f"seed {seed} shifts: {json.dumps(out['shifts'])} {out['shift_settings']}", flush=True)
    return out


def summary(runs: list[dict], models: list[str]) -> dict:
    def stat(values: list[float]) -> dict[str, float]:
        return {"mean": float(np.mean(values)), "std": float(np.std(values))}

    out = {
        "shift_precision": stat([r["shifts"]["precision"] for r in runs]),
        "shift_recall": stat([r["shifts"]["recall"] for r in runs]),
        "shift_f1": stat([r["shifts"]["f1"] for r in runs]),
        "observed_correlation": stat([r["observed_correlation"] for r in runs]),
        "models": {},
    }
    for name in models:
        rows = [r["models"][name] for r in runs]
        out["models"][name] = {
            key: stat([row[key] for row in rows])
            for key in ("test_ndcg@10", "correlation", "reached", "median_lag", "mean_lag")
            if all(row[key] is not None for row in rows)
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--users", type=int, default=1500)
    parser.add_argument("--train-users", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    args = parser.parse_args()
    torch.set_num_threads(1)
    runs = [run_seed(seed, args) for seed in args.seeds]
    result = {
        "protocol": {
            "simulator": "evorec.data.simulate defaults (500 items, 10 topics, drift 0.1)",
            "users": args.users,
            "train_users": args.train_users,
            "epochs": args.epochs,
            "top_n": TOP_N,
            "tolerance": TOLERANCE,
            "lag_level": LEVEL,
            "shift_grid": {"windows": list(WINDOWS), "thresholds": list(THRESHOLDS)},
            "selection": "shift settings by F1 on the validation users; figures on test users",
        },
        "runs": runs,
        "summary": summary(runs, args.models),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["summary"], indent=2))


if __name__ == "__main__":
    main()
