"""Ensembles of one model trained with several seeds: test metrics of each member alone
and of the ensemble of the first 1, 2, ..., n members (leave-one-out, full ranking, the
protocol of ``evorec bench``).

Members are trained one after another and the JSON is rewritten after each, so an
interrupted run keeps what it finished.

    .venv/bin/python benchmarks/ensemble.py --data DATASET --model sasrec --members 3 \\
        --set dim=128 --out results.json
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

from evorec.config import apply_override
from evorec.data.load import load_dataset
from evorec.data.split import leave_one_out
from evorec.evaluation.evaluator import evaluate
from evorec.models import Ensemble, Recommender

METRICS = ("HR@10", "NDCG@10", "MRR@10")


def test_row(model: Recommender, split: Any) -> dict[str, float]:
    metrics = evaluate(model, split.test, ks=(10,)).metrics
    return {m: round(metrics[m], 5) for m in METRICS}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--model", default="sasrec")
    parser.add_argument("--members", type=int, default=3)
    parser.add_argument("--set", action="append", default=[], help="member key=value")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    settings: dict[str, Any] = {}
    for assignment in args.set:
        apply_override(settings, assignment)
    plan = Ensemble(model=args.model, members=args.members, settings=settings)
    split = leave_one_out(load_dataset(args.data))
    out: dict[str, Any] = {"data": args.data, "model": args.model, "settings": settings}
    members: list[Recommender] = []
    for k in range(args.members):
        began = time.perf_counter()
        member = plan.member(k).fit(split)
        seconds = round(time.perf_counter() - began)
        members.append(member)
        out.setdefault("members", []).append(
            {
                "seed": member.config.seed,
                **test_row(member, split),
                "best_epoch": member.fit_info.get("best_epoch"),
                "best_valid_ndcg10": member.fit_info.get("best_valid", {}).get("NDCG@10"),
                "train_seconds": seconds,
            }
        )
        out.setdefault("ensembles", []).append(
            {"members": k + 1, **test_row(Ensemble.of(members), split)}
        )
        print(json.dumps({"member": out["members"][-1], "ensemble": out["ensembles"][-1]}))
        args.out.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
