"""Incremental update on a real log: train on the past, replay the rest into the event store,
update, and compare the old and updated model on the same hold-out.

The events of ``--data`` (preprocessed as ``evorec train`` does) are cut at the
``--quantile`` of their timestamps: SASRec is trained on the events before the cut (users,
items and k-core of that part only), the events after it are posted to an SQLite event
store seeded with the training events, and ``evorec.training.incremental.update`` fine-tunes
on them. The hold-out is each updated user's last event; the old model (the baseline, same
process, same hold-out) cannot rank items it has never seen.

    python benchmarks/incremental_update.py --data ../shared/datasets/ml-latest-small \\
        --work runs/incremental-bench
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

import polars as pl

import evorec
from evorec.data.dataset import ITEM_IDX, USER_IDX
from evorec.store import EventStore
from evorec.training.incremental import UpdateConfig, update


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--quantile", type=float, default=0.9)
    parser.add_argument("--epochs", type=int, default=40, help="base training epochs (cap)")
    parser.add_argument("--update-epochs", type=int, default=10)
    args = parser.parse_args()
    full = evorec.load_dataset(args.data)
    events = pl.DataFrame(
        {
            "user_id": full.user_ids.gather(full.events[USER_IDX]),
            "item_id": full.item_ids.gather(full.events[ITEM_IDX]),
            "timestamp": full.events["timestamp"],
        }
    )
    cut = int(events["timestamp"].quantile(args.quantile))
    past = evorec.from_frame(events.filter(pl.col("timestamp") <= cut), name="past")
    later = events.filter(pl.col("timestamp") > cut)

    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    began = time.perf_counter()
    model = evorec.SASRec(epochs=args.epochs, device="cpu").fit(evorec.leave_one_out(past))
    train_seconds = time.perf_counter() - began
    model.save(args.work / "base")
    store = EventStore(f"sqlite:///{args.work / 'events.db'}")
    store.import_dataset(past)
    store.add_events(later)
    began = time.perf_counter()
    result = update(
        args.work / "base", store, args.work / "updated", UpdateConfig(epochs=args.update_epochs)
    )
    update_seconds = time.perf_counter() - began
    store.close()

    counts = result.counts
    print(
        f"cut at {cut} ({args.quantile:.0%} of events): base {past.n_users} users, "
        f"{past.n_items} items, {past.n_events} events; trained in {train_seconds:.0f}s"
    )
    print(
        f"update: {counts['new_events']} new events, {counts['updated_users']} users "
        f"({counts['new_users']} new), {counts['new_items']} new items, "
        f"{counts['replay_users']} replayed, hold-out {counts['holdout_users']} users; "
        f"{update_seconds:.0f}s ({update_seconds / train_seconds:.2f}x base training)"
    )
    print("| model | " + " | ".join(result.new) + " |")
    print("|---|" + "---|" * len(result.new))
    print("| old (baseline) | " + " | ".join(f"{v:.4f}" for v in result.old.values()) + " |")
    print("| updated | " + " | ".join(f"{v:.4f}" for v in result.new.values()) + " |")
    ratio = result.new["NDCG@10"] / max(result.old["NDCG@10"], 1e-12)
    print(f"NDCG@10 updated / old: {ratio:.2f}x")


if __name__ == "__main__":
    main()
