"""Cross-domain transfer: target-domain NDCG@10 of SASRec fine-tuned from a source domain
against SASRec trained on the target alone, overall and for users with short target
histories.

For each ``SOURCE:TARGET`` pair of dataset directories, in one process:
1. target-only: SASRec on the target's leave-one-out split (the baseline);
2. pretrain: SASRec on the source (its own split, early stopping on its validation);
   ``SOURCE1+SOURCE2`` pretrains on several sources joined into one dataset;
3. fine-tune the pretrained model on the target: ``--freeze`` none and trunk (id-only items:
   the trunk is transferred, the target's item table is initialised afresh).

Test: each target user's last event, full ranking, seen items filtered. The short-history
slice holds the users with at most ``--short`` target events before their test event.
``--target-users F`` keeps a random share F of the target's users (all of their events; the
catalogue unchanged), a scarce target domain.

    .venv/bin/python benchmarks/transfer.py --pair SOURCE_DIR:TARGET_DIR --out results.json \
        [--set key=value] [--short 5] [--target-users 0.2]
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from evorec.config import DataConfig, RunConfig, apply_override
from evorec.data.dataset import USER_IDX, Dataset
from evorec.data.split import Split, make_split
from evorec.evaluation.evaluator import evaluate
from evorec.models.base import Recommender
from evorec.training.pipeline import load_data
from evorec.training.pipeline import train as run_train
from evorec.training.transfer import finetune, pretrain

METRICS = ("HR@10", "NDCG@10")
PREPROCESS = {"min_user_events": 3, "min_item_events": 1}


def scores(model: Recommender, split: Split, short: int) -> dict[str, Any]:
    """Test HR/NDCG@10 overall and on the short-history slice."""
    rows = np.flatnonzero(split.test.histories.lengths <= short)
    whole = evaluate(model, split.test, ks=(10,)).metrics
    part = evaluate(model, split.test.subset(rows), ks=(10,)).metrics
    return {
        **{m: round(whole[m], 5) for m in METRICS},
        **{f"short {m}": round(part[m], 5) for m in METRICS},
        "short_users": len(rows),
        "users": len(split.test),
        "best_epoch": model.fit_info.get("best_epoch"),
    }


def keep_users(dataset: Dataset, share: float, seed: int) -> Dataset:
    """The events of a random ``share`` of the users, in the same id space."""
    rng = np.random.default_rng(seed)
    kept = rng.choice(dataset.n_users, round(share * dataset.n_users), replace=False)
    return dataset.with_events(dataset.events.filter(pl.col(USER_IDX).is_in(kept.tolist())))


def run_pair(
    pair: str,
    model: dict[str, Any],
    short: int,
    work: Path,
    save: Any,
    target_only: bool,
    target_users: float,
) -> dict[str, Any]:
    """Target-only, pretraining and fine-tuning for one ``SOURCE:TARGET`` pair."""
    source_path, target_path = pair.split(":")
    config = RunConfig(data=DataConfig(path=target_path, preprocess=PREPROCESS), model=model)
    target = load_data(config.data)
    if target_users < 1:
        target = keep_users(target, target_users, config.model.get("seed", 0))
    split = make_split(target, config.data.split)
    rows: dict[str, Any] = {"target": target.stats()}

    def report(name: str, row: dict[str, Any], began: float) -> None:
        row["seconds"] = round(time.perf_counter() - began)
        if "target-only" in rows and "short NDCG@10" in row:
            for m in ("NDCG@10", "short NDCG@10"):
                row[f"{m} ratio"] = round(row[m] / max(rows["target-only"][m], 1e-12), 3)
        rows[name] = row
        print(pair, name, json.dumps(row), flush=True)
        save(rows)

    began = time.perf_counter()
    result = run_train(config, dataset=target)
    report("target-only", scores(result.model, split, short), began)
    if target_only:
        return rows
    began = time.perf_counter()
    pre = pretrain(config, source_path.split("+"), work / "pretrained")
    pre_row = {m: round(pre.test.metrics[m], 5) for m in METRICS}
    report(
        "pretrain (source test)", {**pre_row, "best_epoch": pre.model.fit_info["best_epoch"]}, began
    )
    for freeze in ("none", "trunk"):
        began = time.perf_counter()
        tuned = finetune(work / "pretrained", config, freeze=freeze, dataset=target)
        report(f"fine-tune, freeze {freeze}", scores(tuned.model, split, short), began)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--pair", action="append", required=True, help="SOURCE_DIR[+SOURCE_DIR...]:TARGET_DIR"
    )
    parser.add_argument("--set", action="append", default=[], help="SASRec key=value")
    parser.add_argument("--short", type=int, default=5, help="short history: <= this many events")
    parser.add_argument("--target-only", action="store_true", help="the baseline alone")
    parser.add_argument(
        "--target-users", type=float, default=1.0, help="share of the target's users kept"
    )
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    model: dict[str, Any] = {"name": "sasrec"}
    for assignment in args.set:
        apply_override(model, assignment)
    out: dict[str, Any] = {
        "settings": model,
        "short": args.short,
        "target_users": args.target_users,
        "pairs": {},
    }
    work = Path(tempfile.mkdtemp(prefix="evorec-transfer-"))
    try:
        for pair in args.pair:

            def save(rows: dict[str, Any], pair: str = pair) -> None:
                out["pairs"][pair] = rows
                args.out.write_text(json.dumps(out, indent=2))

            run_pair(pair, dict(model), args.short, work, save, args.target_only, args.target_users)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
