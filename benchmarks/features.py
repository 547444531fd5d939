"""Content features for SASRec: warm leave-one-out quality and cold-item ranking.

For one dataset, in one process:
1. leave-one-out, full ranking, seen items filtered: MostPopular, id-only SASRec (the
   baseline) and SASRec with the given item features; NDCG@10 ratio to the baseline; and
   each model again on very short histories (the test users' last 1, 2 and 3 events only);
2. cold items (``--cold-fraction`` of the items held out of training): MostPopular, the
   expected score of a random ranking, id-only SASRec and the content-aware SASRec (trained
   with ``--cold-id-dropout``).

    .venv/bin/python benchmarks/features.py --data PATH --features id,text [--set key=value]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from evorec.config import apply_override
from evorec.data.load import load_dataset
from evorec.data.split import EvalSet, cold_item_split, leave_one_out
from evorec.evaluation.cold import evaluate_cold
from evorec.evaluation.evaluator import evaluate
from evorec.models import MostPopular, SASRec

METRICS = ("HR@10", "NDCG@10", "Recall@10")
SHORT = (1, 2, 3)  # history lengths of the short-history slice


def fit_and_score(model: Any, split: Any, score: Any) -> dict[str, Any]:
    began = time.perf_counter()
    model.fit(split)
    seconds = time.perf_counter() - began
    metrics = score(model).metrics
    return {
        **{k: v for k, v in metrics.items() if k in METRICS or k.startswith("random")},
        "best_epoch": model.fit_info.get("best_epoch"),
        "train_seconds": round(seconds, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--features", required=True, help="e.g. id,attributes or id,text")
    parser.add_argument("--set", action="append", default=[], help="SASRec key=value")
    parser.add_argument("--cold-fraction", type=float, default=0.1)
    parser.add_argument("--cold-features", help="features of the cold model (default --features)")
    parser.add_argument(
        "--cold-id-dropout",
        type=float,
        default=0.3,
        help="id_dropout of the content-aware cold model (its content learns to stand alone)",
    )
    parser.add_argument("--skip-warm", action="store_true", help="run the cold protocol only")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    settings: dict[str, Any] = {}
    for assignment in args.set:
        apply_override(settings, assignment)
    kinds = args.features.split(",")
    dataset = load_dataset(args.data)
    out: dict[str, Any] = {"data": args.data, "stats": dataset.stats(), "settings": settings}

    def report(section: str, name: str, row: dict[str, Any]) -> None:
        out.setdefault(section, {})[name] = row
        base = out[section].get("sasrec id")
        ratio = (
            f" (NDCG@10 x{row['NDCG@10'] / base['NDCG@10']:.2f} vs id-only)"
            if base and base["NDCG@10"] and name != "sasrec id"
            else ""
        )
        print(f"{section:5} {name:28} " + json.dumps(row) + ratio, flush=True)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(out, indent=2))

    if not args.skip_warm:
        split = leave_one_out(dataset)
        test = split.test
        warm = [("pop", MostPopular())] + [
            (f"sasrec {'+'.join(f)}", SASRec(settings, item_features=f)) for f in (["id"], kinds)
        ]
        for name, model in warm:
            row = fit_and_score(model, split, lambda m: evaluate(m, test))
            for n in SHORT:
                short = EvalSet(test.users, test.histories.last(n), test.targets, test.filter_seen)
                row[f"NDCG@10 last {n}"] = evaluate(model, short, ks=(10,)).metrics["NDCG@10"]
            report("warm", name, row)

    cold = cold_item_split(dataset, fraction=args.cold_fraction, seed=0)
    out["cold_items"] = int(len(cold.cold_items))
    out["cold_users"] = int(len(cold.test))
    cold_kinds = args.cold_features.split(",") if args.cold_features else kinds
    for name, model in (
        ("pop", MostPopular()),
        ("sasrec id", SASRec(settings)),
        (
            f"sasrec {'+'.join(cold_kinds)}",
            SASRec(settings | {"id_dropout": args.cold_id_dropout}, item_features=cold_kinds),
        ),
    ):
        report("cold", name, fit_and_score(model, cold.split, lambda m: evaluate_cold(m, cold)))


if __name__ == "__main__":
    main()
