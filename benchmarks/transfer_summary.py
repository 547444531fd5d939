"""Summary of repeated transfer runs: ``benchmarks/transfer.py`` output files, one per seed,
read together; per row the mean HR/NDCG@10 overall and on the short-history slice, the mean
per-seed ratio to target-only, how many seeds it beats target-only on, and the paired t-test
p-value of the difference.

    .venv/bin/python benchmarks/transfer_summary.py benchmarks/results/transfer-scarce-20/*.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from scipy import stats

BASELINE = "target-only"
METRICS = ("HR@10", "NDCG@10", "short HR@10", "short NDCG@10")


def runs(files: list[Path]) -> dict[str, np.ndarray]:
    """Row name -> ``[seeds, metrics]`` array over every finished pair of every file (a
    run still in progress, with fewer rows than the others, is left out)."""
    pairs = [p for f in files for p in json.loads(f.read_text())["pairs"].values()]
    scored = [
        {k: r for k, r in p.items() if isinstance(r, dict) and "short NDCG@10" in r} for p in pairs
    ]
    complete = max(len(p) for p in scored)
    rows: dict[str, list[list[float]]] = {}
    for pair in (p for p in scored if len(p) == complete):
        for name, row in pair.items():
            rows.setdefault(name, []).append([row[m] for m in METRICS])
    return {name: np.array(values) for name, values in rows.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", type=Path, nargs="+")
    args = parser.parse_args()
    rows = runs(args.files)
    base = rows[BASELINE]
    print(f"{len(base)} runs")
    header = [*METRICS, "NDCG ratio", "wins", "p (NDCG)", "short ratio", "short wins", "p (short)"]
    print("| row | " + " | ".join(header) + " |")
    print("|---" * (len(header) + 1) + "|")
    for name, values in rows.items():
        cells = [f"{v:.4f}" for v in values.mean(0)]
        if name == BASELINE:
            cells += ["1.000", "-", "-", "1.000", "-", "-"]
        else:
            for column in (METRICS.index("NDCG@10"), METRICS.index("short NDCG@10")):
                ratio = values[:, column] / base[:, column]
                p = stats.ttest_rel(values[:, column], base[:, column]).pvalue
                wins = int((ratio > 1).sum())
                cells += [f"{ratio.mean():.3f}", f"{wins}/{len(ratio)}", f"{p:.3f}"]
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
