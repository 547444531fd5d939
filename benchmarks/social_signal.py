"""How much do friends' histories say about a user's next item? Leave-one-out test targets
against (a) the items of the user's friends and (b) the items of as many random users,
and HR@10 of ranking items by friends' counts against ranking by global counts (seen items
removed in both). A social model can only help as much as (a) exceeds (b).

    .venv/bin/python benchmarks/social_signal.py [PATH ...]
"""

from __future__ import annotations

import sys

import numpy as np

from evorec.data.load import load_dataset
from evorec.data.social import social_edges
from evorec.data.split import leave_one_out

PATHS = ["../shared/datasets/ciao", "../shared/datasets/lastfm-hetrec2011"]


def main(paths: list[str]) -> None:
    print(
        "| dataset | test users with friends | mean friends | target in friends' items "
        "| target in random users' items | HR@10 friends' counts | HR@10 global counts |"
    )
    print("|---|---|---|---|---|---|---|")
    rng = np.random.default_rng(0)
    for path in paths:
        dataset = load_dataset(path)
        split = leave_one_out(dataset)
        train = split.train.histories
        trusters, trustees = social_edges(dataset)
        starts = np.searchsorted(trusters, np.arange(dataset.n_users + 1))
        popularity = split.train.item_popularity.astype(np.float64)
        in_friends = in_random = hit_friends = hit_global = users = degree = 0
        for row, user in enumerate(split.test.users):
            friends = trustees[starts[user] : starts[user + 1]]
            if len(friends) == 0:
                continue
            target = split.test.targets[row][0]
            seen = split.test.histories[row]
            counts = np.bincount(
                np.concatenate([train[f] for f in friends]), minlength=dataset.n_items
            ).astype(np.float64)
            others = rng.choice(dataset.n_users, len(friends), replace=False)
            in_friends += counts[target] > 0
            in_random += any(target in train[o] for o in others)
            for scores, name in ((counts + 1e-9 * popularity, "friends"), (popularity, "global")):
                scores = scores.copy()
                scores[seen] = -np.inf
                hit = target in np.argsort(-scores, kind="stable")[:10]
                if name == "friends":
                    hit_friends += hit
                else:
                    hit_global += hit
            users += 1
            degree += len(friends)
        print(
            f"| {dataset.name} | {users} | {degree / users:.1f} | {in_friends / users:.3f} "
            f"| {in_random / users:.3f} | {hit_friends / users:.4f} | {hit_global / users:.4f} |"
        )


if __name__ == "__main__":
    main(sys.argv[1:] or PATHS)
