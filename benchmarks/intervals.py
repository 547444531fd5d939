"""What the timestamps of a dataset say: the distribution of intervals between a user's
consecutive events, and of the interval before each user's last (test) event, on the
processed data (the same preprocessing as `evorec bench`).

    .venv/bin/python benchmarks/intervals.py ../shared/datasets/ml-latest-small \\
        ../shared/datasets/taobao-behavior-sample/UserBehavior_head84k.csv
"""

from __future__ import annotations

import argparse

import numpy as np

from evorec.data.load import load_dataset

DAY = 86_400


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+")
    args = parser.parse_args()
    for path in args.paths:
        dataset = load_dataset(path)
        histories = dataset.histories
        times, rows = histories.timestamps, histories.rows
        assert times is not None
        within = rows[1:] == rows[:-1]
        gaps = (times[1:] - times[:-1])[within]
        last = histories.offsets[1:] - 1
        has_two = histories.lengths >= 2
        test_gaps = times[last[has_two]] - times[last[has_two] - 1]
        shares = {
            "0 s": gaps == 0,
            "<= 10 s": gaps <= 10,
            "<= 60 s": gaps <= 60,
            "<= 1 h": gaps <= 3600,
            "> 1 day": gaps > DAY,
        }
        print(f"{dataset.name}: {dataset.n_users} users, {dataset.n_events} events")
        print("  intervals: " + ", ".join(f"{k} {v.mean():.1%}" for k, v in shares.items()))
        print(f"  median interval {np.median(gaps):.0f} s")
        print(
            f"  before the test event: median {np.median(test_gaps):.0f} s, "
            f"{(test_gaps > DAY).mean():.1%} > 1 day"
        )


if __name__ == "__main__":
    main()
