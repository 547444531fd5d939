"""The accuracy levers of SASRec on Beauty side by side, chosen by validation.

Each configuration is one `evorec bench` run (its results file is named in LEVERS; the
commands are in docs/benchmarks.md, "Accuracy levers"). This script gathers them with the
default configuration's three-seed run (`s3rec-beauty-seeds.json`), compares every
configuration's validation NDCG@10 with the default's seed-0 run, marks the one validation
chooses, and calls a gap within the default's seed spread (std of validation NDCG@10) a tie.
Test metrics are reported, never used to choose. A run stopped before early stopping ended
(``--stopped NAME=LOG``, the run's `evorec -v bench` log) has no test metrics and cannot be
chosen: its validation curve is set beside the default's over the same epochs.

    python benchmarks/levers.py --out benchmarks/results/levers-beauty.json \
        --stopped ligr=benchmarks/results/levers-beauty-ligr.log
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any

from evorec.io import write_atomic_text

RESULTS = Path(__file__).parent / "results"
DEFAULT = "s3rec-beauty-seeds.json"
# name -> (results file, what differs from the default configuration)
LEVERS = {
    "esasrec": (
        "levers-beauty-esasrec.json",
        "eSASRec recipe: layers=1 norm=rms ffn=swiglu gated=true loss=sampled_softmax "
        "n_negatives=256 negative_power=0 lr=1e-3",
    ),
    "ligr": (
        "levers-beauty-ligr.json",
        "LiGR blocks: norm=rms ffn=swiglu gated=true",
    ),
    "sasrec_ss": (
        "levers-beauty-ss.json",
        "SASRec+SS recipe: layers=1 dropout=0.2 loss=sampled_softmax n_negatives=256 "
        "negative_power=0 lr=1e-3 epochs=200 patience=50",
    ),
    "cosine": (
        "levers-beauty-cosine.json",
        "warm-up and decay: warmup_epochs=1 lr_schedule=cosine (over the 40 epochs)",
    ),
    "gbce": (
        "levers-beauty-gbce.json",
        "gBCE: loss=gbce gbce_t=0.75 n_negatives=256 negative_power=0",
    ),
}
METRICS = ("NDCG@10", "HR@10")
EPOCH_LINE = re.compile(r"epoch (\d+) loss (\S+)\s+val NDCG@10 (\S+)")


def sasrec_entry(file: Path) -> dict[str, Any]:
    """The SASRec entry of an `evorec bench` results file (its only dataset)."""
    data = json.loads(file.read_text())
    (dataset,) = data["datasets"]
    return dataset["models"]["sasrec"]


def row(name: str, file: str, change: str, entry: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": name,
        "change": change,
        "results_file": f"benchmarks/results/{file}",
        "seed": entry.get("seed", entry["config"]["seed"]),
        "valid_NDCG@10": entry["best_valid_ndcg10"],
        **{f"test_{m}": entry[m] for m in METRICS},
        "best_epoch": entry["best_epoch"],
        "epochs": entry["epochs"],
        "train_seconds": entry["train_seconds"],
    }


def stopped_row(
    name: str, log: Path, default_curve: dict[int, float], spread: float
) -> dict[str, Any]:
    """A run stopped by hand: its validation curve from the log, beside the default's."""
    curve = {int(m[1]): float(m[3]) for m in EPOCH_LINE.finditer(log.read_text())}
    last = max(curve)
    best, reference = max(curve.values()), max(v for e, v in default_curve.items() if e <= last)
    return {
        "name": name,
        "change": LEVERS[name][1],
        "log": str(log),
        "stopped_after_epoch": last,
        "valid_curve": curve,
        "default_valid_curve_same_epochs": {e: default_curve[e] for e in curve},
        "best_valid_so_far": best,
        "default_best_valid_same_epochs": reference,
        "verdict": "incomplete (stopped by the time budget): "
        + ("tie so far" if abs(best - reference) <= spread else "differs so far"),
    }


def summarise(results: Path, stopped: dict[str, Path]) -> dict[str, Any]:
    default = sasrec_entry(results / DEFAULT)
    seed0 = next(run for run in default["runs"] if run["seed"] == 0)
    spread = default["std"]["best_valid_ndcg10"]
    default_curve = {int(point[0]): point[2] for point in seed0["valid_curve"]}
    rows = [row("default", DEFAULT, "the default configuration (seed 0 run)", seed0)]
    for name, (file, change) in LEVERS.items():
        if (results / file).exists() and name not in stopped:
            rows.append(row(name, file, change, sasrec_entry(results / file)))
    chosen = max(rows, key=lambda r: r["valid_NDCG@10"])
    for r in rows:
        gap = r["valid_NDCG@10"] - seed0["best_valid_ndcg10"]
        r["valid_gap_to_default"] = gap
        r["verdict"] = (
            "default"
            if r["name"] == "default"
            else "tie"
            if abs(gap) <= spread
            else "better"
            if gap > 0
            else "worse"
        )
        r["chosen_by_validation"] = r is chosen
    return {
        "dataset": "Beauty (S3-Rec files), leave-one-out, full ranking, seen items filtered",
        "selection": "validation NDCG@10 (5,000 sampled validation users) only",
        "tie_rule": "a validation gap to the default within the default's seed std is a tie",
        "default_valid_seed_std": spread,
        "default_three_seeds": {
            "valid_NDCG@10": [default["best_valid_ndcg10"], spread],
            **{f"test_{m}": [default[m], default["std"][m]] for m in METRICS},
        },
        "configurations": rows,
        "stopped_runs": [
            stopped_row(name, log, default_curve, spread) for name, log in stopped.items()
        ],
        "chosen": chosen["name"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument(
        "--stopped", action="append", default=[], help="NAME=LOG of a run stopped by hand"
    )
    args = parser.parse_args()
    stopped = dict(item.split("=", 1) for item in args.stopped)
    summary = summarise(RESULTS, {name: Path(log) for name, log in stopped.items()})
    write_atomic_text(args.out, json.dumps(summary, indent=2) + "\n")
    for r in summary["configurations"]:
        mark = " <- chosen by validation" if r["chosen_by_validation"] else ""
        print(
            f"{r['name']:<10} val {r['valid_NDCG@10']:.4f}  test NDCG@10 {r['test_NDCG@10']:.4f}"
            f"  HR@10 {r['test_HR@10']:.4f}  {r['verdict']}{mark}"
        )
    for r in summary["stopped_runs"]:
        print(
            f"{r['name']:<10} val {r['best_valid_so_far']:.4f} after {r['stopped_after_epoch']}"
            f" epochs (default {r['default_best_valid_same_epochs']:.4f})  {r['verdict']}"
        )


if __name__ == "__main__":
    main()
