"""RecTools 0.19's SASRec under evorec's protocol, for the side-by-side in
``benchmarks/peers/rectools_sasrec.sh`` (which builds the virtual environment this runs in).

Data: a file with one line per user, ``user item item ...`` in chronological order (the S3-Rec
Amazon files), read with ``recbole_sasrec.read_sequences`` and turned into RecTools datasets
(``datetime`` = the event's position in the user's line).

Protocol, as ``evorec bench`` runs it: leave-one-out (each user's last event is the test
target, the one before it the validation target; the model trains on the rest), full ranking
over all items the model knows, HR@10 and NDCG@10 over every user, early stopping on
validation NDCG@10, test metrics of the best-validation epoch. The user's history before the
target is removed from the ranking (RecTools ``filter_viewed`` on the events before the
target: the training events for validation, training plus validation events for test). A
target item that never occurs in the training events is unknown to RecTools and counts as a
miss (``items_only_in_targets`` says how many such items there are).

Model: ``SASRecModel`` with softmax loss (full softmax over the catalogue), 64 factors, 2
blocks, session length 50, item-id embeddings only (no item features here), its defaults
otherwise (recorded in the results). One torch thread.

Training runs one epoch per ``fit_partial`` call, then validates. Per epoch the results hold
the cumulative seconds of Lightning's training epochs alone (``train_seconds``) and of
everything since training began (``wall_seconds``: training, RecTools' per-call dataset
preparation and validation), the validation NDCG@10 and HR@10 and the mean training loss. The
best state is kept in memory.
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import shlex
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from recbole_sasrec import InputError, check_args, peer_main, read_sequences

SCRIPT = "benchmarks/peers/rectools_sasrec.sh"


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--data", default="../shared/datasets/amazon-s3rec/Beauty.txt", help="user item item ..."
    )
    parser.add_argument("--out", default="benchmarks/results/peers-rectools-beauty.json")
    parser.add_argument("--users", type=int, help="only the first N users of the file")
    parser.add_argument("--epochs", type=int, default=200, help="most epochs")
    parser.add_argument("--patience", type=int, default=10, help="epochs without gain")
    parser.add_argument(
        "--max-seconds",
        type=float,
        help="stop after the first epoch that ends past this many seconds (that epoch is "
        "validated and kept as usual)",
    )
    parser.add_argument("--batch-size", type=int, default=128, help="RecTools default 128")
    parser.add_argument("--lr", type=float, default=1e-3, help="RecTools default 1e-3")
    parser.add_argument("--seed", type=int, default=0)
    return check_args(parser.parse_args(argv), ("users", "epochs", "patience", "batch_size"))


def interactions(sequences: list[tuple[str, list[str]]], drop_last: int) -> pd.DataFrame:
    """RecTools interactions: every user's events but the last ``drop_last``."""
    rows = [
        (user, item, pos)
        for user, items in sequences
        for pos, item in enumerate(items[: len(items) - drop_last])
    ]
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "position"])
    frame["weight"] = 1.0
    frame["datetime"] = pd.to_datetime(frame.pop("position"), unit="s")
    return frame


def hit_and_ndcg(recos: pd.DataFrame, targets: dict[str, str], users: int) -> dict[str, float]:
    """HR@10 and NDCG@10 over ``users`` users (a user with no recommendations scores 0)."""
    ranks = recos[recos["item_id"] == recos["user_id"].map(targets)]["rank"].to_numpy()
    return {
        "HR@10": float(len(ranks) / users),
        "NDCG@10": float(np.sum(1.0 / np.log2(ranks + 1.0)) / users),
    }


def make_epoch_clock() -> Any:
    """A Lightning callback summing the seconds of training epochs and their losses."""
    from pytorch_lightning.callbacks import Callback

    class EpochClock(Callback):
        def __init__(self) -> None:
            self.seconds = 0.0
            self.losses: list[float] = []
            self.began = 0.0

        def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
            self.began = time.perf_counter()
            self.losses = []

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            loss = outputs["loss"] if isinstance(outputs, dict) else outputs
            self.losses.append(float(loss))

        def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
            self.seconds += time.perf_counter() - self.began

    return EpochClock()


def train_and_test(
    args: argparse.Namespace, sequences: list[tuple[str, list[str]]]
) -> dict[str, Any]:
    from pytorch_lightning import Trainer, seed_everything
    from rectools.dataset import Dataset
    from rectools.models import SASRecModel
    from rectools.models.nn.item_net import IdEmbeddingsItemNet

    began = time.perf_counter()
    train = Dataset.construct(interactions(sequences, drop_last=2))
    before_test = Dataset.construct(interactions(sequences, drop_last=1))
    users = [user for user, _ in sequences]
    valid_targets = {user: items[-2] for user, items in sequences if len(items) >= 2}
    test_targets = {user: items[-1] for user, items in sequences}
    train_items = set(train.item_id_map.external_ids)
    target_items = set(valid_targets.values()) | set(test_targets.values())
    clock = make_epoch_clock()

    def trainer() -> Trainer:
        return Trainer(
            max_epochs=1,
            accelerator="cpu",
            devices=1,
            deterministic=True,
            enable_progress_bar=False,
            enable_model_summary=False,
            enable_checkpointing=False,
            logger=False,
            callbacks=[clock],
        )

    model_settings = {
        "n_factors": 64,
        "n_blocks": 2,
        "n_heads": 4,
        "dropout_rate": 0.2,
        "session_max_len": 50,
        "train_min_user_interactions": 2,
        "loss": "softmax",
        "lr": args.lr,
        "batch_size": args.batch_size,
        "use_pos_emb": True,
        "use_causal_attn": True,
        "use_key_padding_mask": False,
        "deterministic": True,
    }
    seed_everything(args.seed, workers=True)
    model = SASRecModel(
        **model_settings,
        item_net_block_types=(IdEmbeddingsItemNet,),
        get_trainer_func=trainer,
        recommend_torch_device="cpu",
    )
    settings = {
        **model_settings,
        "item_net_block_types": ["IdEmbeddingsItemNet"],
        "seed": args.seed,
        "epochs": args.epochs,
        "patience": args.patience,
    }
    setup_seconds = time.perf_counter() - began
    curve: list[dict[str, Any]] = []
    best_state: dict[str, torch.Tensor] | None = None
    best_epoch, best_score, stale = 0, -1.0, 0
    stopped_by = "epochs"
    fit_began = time.perf_counter()
    for epoch in range(1, args.epochs + 1):
        model.fit_partial(train, min_epochs=1, max_epochs=1)
        # fit_partial trains a deep copy of the trainer: its callback is the live clock
        epoch_clock = next(c for c in model.fit_trainer.callbacks if type(c) is type(clock))
        recos = model.recommend(
            list(valid_targets), train, k=10, filter_viewed=True, on_unsupported_targets="ignore"
        )
        valid = hit_and_ndcg(recos, valid_targets, len(users))
        record = {
            "epoch": epoch,
            "train_seconds": epoch_clock.seconds,
            "wall_seconds": time.perf_counter() - fit_began,
            "NDCG@10": valid["NDCG@10"],
            "HR@10": valid["HR@10"],
            "loss": float(np.mean(epoch_clock.losses)),
        }
        curve.append(record)
        print(
            f"epoch {epoch}: loss {record['loss']:.4f}  val NDCG@10 {record['NDCG@10']:.4f}  "
            f"{record['wall_seconds']:.0f}s",
            file=sys.stderr,
            flush=True,
        )
        if record["NDCG@10"] > best_score:
            best_score, best_epoch, stale = record["NDCG@10"], epoch, 0
            best_state = copy.deepcopy(model.lightning_model.state_dict())
        else:
            stale += 1
        if stale >= args.patience:
            stopped_by = "early stopping"
            break
        if args.max_seconds is not None and record["wall_seconds"] >= args.max_seconds:
            stopped_by = f"time budget (--max-seconds {args.max_seconds:g})"
            break
    fit_seconds = time.perf_counter() - fit_began
    if best_state is None:
        raise InputError("training ended without a validated epoch")
    model.lightning_model.load_state_dict(best_state)
    began = time.perf_counter()
    recos = model.recommend(
        users, before_test, k=10, filter_viewed=True, on_unsupported_targets="ignore"
    )
    test = hit_and_ndcg(recos, test_targets, len(users))
    return {
        "model": settings,
        "items": len(train_items | target_items),
        "items_only_in_targets": len(target_items - train_items),
        "events": sum(len(items) for _, items in sequences),
        "curve": curve,
        "best_epoch": best_epoch,
        "best_valid_ndcg10": best_score,
        "test": test,
        "setup_seconds": setup_seconds,
        "fit_seconds": fit_seconds,
        "test_seconds": time.perf_counter() - began,
        "epochs": len(curve),
        "stopped_by": stopped_by,
    }


def run(args: argparse.Namespace, argv: list[str]) -> dict[str, Any]:
    """The results of RecTools' SASRec on ``args.data``, as written to JSON."""
    import pytorch_lightning
    import rectools

    data_path = Path(args.data).resolve()
    sequences = read_sequences(data_path, args.users)
    short = [user for user, items in sequences if len(items) < 3]
    if short:
        raise InputError(f"{data_path}: user {short[0]!r} has under 3 events")
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore", module=r"(pytorch_lightning|lightning_fabric)\.")
    outcome = train_and_test(args, sequences)
    return {
        "peer": "RecTools SASRec",
        "command": shlex.join(["bash", SCRIPT, *argv]),
        "dataset": {
            "path": args.data,
            "name": data_path.stem,
            "users": len(sequences),
            "items": outcome.pop("items"),
            "events": outcome.pop("events"),
            "items_only_in_targets": outcome.pop("items_only_in_targets"),
        },
        "protocol": {
            "split": "leave-one-out: last event test, second-to-last validation, the rest training",
            "ranking": "full ranking over every item of the training events (RecTools "
            "recommend, torch ranking); a target item outside them is a miss",
            "filter_seen": "every item of the user's history before the target is removed from "
            "the ranking, as evorec does (RecTools filter_viewed)",
            "seen_items_removed": True,
            "ties": "torch.topk order (RecTools); evorec breaks ties at random",
            "early_stopping": f"validation NDCG@10 over every user, patience {args.patience}",
            "selection": "the epoch with the best validation NDCG@10; test metrics reported",
            "threads": torch.get_num_threads(),
            "clock": "train_seconds: Lightning's training epochs alone; wall_seconds: "
            "training, RecTools' dataset preparation per fit_partial call and validation since "
            "training began; building the datasets and the model is setup_seconds",
        },
        **outcome,
        "versions": {
            "rectools": rectools.__version__,
            "pytorch_lightning": pytorch_lightning.__version__,
            "torch": torch.__version__,
            "numpy": np.__version__,
            "pandas": pd.__version__,
            "python": platform.python_version(),
        },
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
    }


if __name__ == "__main__":
    sys.exit(peer_main("RecTools", sys.argv[1:], parse_args, run))
