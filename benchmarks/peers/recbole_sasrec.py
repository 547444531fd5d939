"""RecBole 1.2.1's SASRec under evorec's protocol, for the side-by-side in
``benchmarks/peers/recbole_sasrec.sh`` (which builds the virtual environment this runs in).

Data: a file with one line per user, ``user item item ...`` in chronological order (the S3-Rec
Amazon files), written as a RecBole atomic ``.inter`` file (``timestamp`` = the event's
position in the user's line) in a temporary directory that is removed afterwards.

Protocol, as ``evorec bench`` runs it: leave-one-out (each user's last event is the test
target, the one before it the validation target, RecBole ``LS: valid_and_test``, order
``TO``), full ranking over all items, HR@10 and NDCG@10, early stopping on validation
NDCG@10, test metrics of the best-validation epoch. RecBole's full-sort evaluation of a
sequential model removes only the padding item from the ranking (``history_index`` is None
for sequential models); to match evorec, the items of the user's history before the target
(the whole history, not only the ``MAX_ITEM_LIST_LENGTH`` items the model reads) are
removed here too, unless ``--keep-seen``.

Model: SASRec with CE loss (full softmax), hidden size 64, 2 layers, max length 50, the
remaining settings at RecBole's defaults (recorded in the results). One torch thread.

Per epoch the results hold the cumulative seconds of training alone (``train_seconds``) and of
training plus validation since ``fit`` began (``wall_seconds``, the clock of evorec's
``history``), the validation NDCG@10 and HR@10 and the training loss. The best state is kept
in memory (RecBole's own checkpoint is a pickle, which this never writes or loads).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import shlex
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

DATASET_NAME = "peer"
SCRIPT = "benchmarks/peers/recbole_sasrec.sh"


class InputError(Exception):
    """Bad input data or arguments: reported as one line, without a traceback."""


class BudgetSpent(Exception):
    """Raised after the epoch that used up ``--max-seconds`` (its state already kept)."""


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--data", default="../shared/datasets/amazon-s3rec/Beauty.txt", help="user item item ..."
    )
    parser.add_argument("--out", default="benchmarks/results/peers-recbole-beauty.json")
    parser.add_argument("--users", type=int, help="only the first N users of the file")
    parser.add_argument("--epochs", type=int, default=300, help="RecBole default 300")
    parser.add_argument(
        "--patience", type=int, default=10, help="epochs without gain (RecBole stopping_step)"
    )
    parser.add_argument(
        "--max-seconds",
        type=float,
        help="stop after the first epoch that ends past this many seconds of training and "
        "validation (the epoch is validated and kept as usual)",
    )
    parser.add_argument("--batch-size", type=int, default=2048, help="RecBole default 2048")
    parser.add_argument("--eval-batch-size", type=int, default=4096)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=2020, help="RecBole default 2020")
    parser.add_argument(
        "--keep-seen",
        action="store_true",
        help="rank history items too (RecBole's own behaviour for sequential models)",
    )
    return check_args(
        parser.parse_args(argv), ("users", "epochs", "patience", "batch_size", "eval_batch_size")
    )


def check_args(args: argparse.Namespace, counts: tuple[str, ...]) -> argparse.Namespace:
    """The arguments every peer runner takes: ``counts`` at least 1 when given, a positive
    ``--max-seconds`` and ``--lr``."""
    for name in counts:
        value = getattr(args, name)
        if value is not None and value < 1:
            raise InputError(f"--{name.replace('_', '-')} {value}: must be at least 1")
    if args.max_seconds is not None and args.max_seconds <= 0:
        raise InputError(f"--max-seconds {args.max_seconds}: must be positive")
    if args.lr <= 0:
        raise InputError(f"--lr {args.lr}: must be positive")
    return args


def read_sequences(path: Path, limit: int | None) -> list[tuple[str, list[str]]]:
    """``(user, items)`` per line of ``path``; errors name the line."""
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    sequences: list[tuple[str, list[str]]] = []
    seen_users: dict[str, int] = {}
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if limit is not None and len(sequences) >= limit:
                break
            fields = line.split()
            if not fields:
                continue
            if len(fields) < 2:
                raise InputError(f"{path}:{number}: user {fields[0]!r} has no items")
            user, items = fields[0], fields[1:]
            if user in seen_users:
                raise InputError(
                    f"{path}:{number}: user {user!r} already on line {seen_users[user]}"
                )
            seen_users[user] = number
            sequences.append((user, items))
    if not sequences:
        raise InputError(f"{path}: no users")
    return sequences


def write_inter(sequences: list[tuple[str, list[str]]], directory: Path) -> Path:
    """RecBole atomic file ``<directory>/<name>/<name>.inter``; timestamp = position."""
    target = directory / DATASET_NAME / f"{DATASET_NAME}.inter"
    target.parent.mkdir(parents=True)
    with target.open("w", encoding="utf-8") as handle:
        handle.write("user_id:token\titem_id:token\ttimestamp:float\n")
        for user, items in sequences:
            handle.writelines(f"{user}\t{item}\t{pos}\n" for pos, item in enumerate(items))
    return target


def recbole_config(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    return {
        "data_path": str(workdir),
        "checkpoint_dir": str(workdir / "saved"),
        "USER_ID_FIELD": "user_id",
        "ITEM_ID_FIELD": "item_id",
        "TIME_FIELD": "timestamp",
        "load_col": {"inter": ["user_id", "item_id", "timestamp"]},
        # no filtering beyond what the file has
        "user_inter_num_interval": "[0,inf)",
        "item_inter_num_interval": "[0,inf)",
        "MAX_ITEM_LIST_LENGTH": 50,
        "hidden_size": 64,
        "n_layers": 2,
        "loss_type": "CE",
        "train_neg_sample_args": None,
        "eval_args": {
            "split": {"LS": "valid_and_test"},
            "order": "TO",
            "group_by": "user",
            "mode": "full",
        },
        "metrics": ["Hit", "NDCG"],
        "topk": [10],
        "valid_metric": "NDCG@10",
        "metric_decimal_place": 6,
        "epochs": args.epochs,
        "stopping_step": args.patience,
        "eval_step": 1,
        "train_batch_size": args.batch_size,
        "eval_batch_size": args.eval_batch_size,
        "learning_rate": args.lr,
        "seed": args.seed,
        "reproducibility": True,
        "use_gpu": False,
        "show_progress": False,
        "log_wandb": False,
        "save_dataset": False,
        "save_dataloaders": False,
        "worker": 0,
    }


def user_histories(dataset: Any) -> dict[int, np.ndarray]:
    """Internal user id -> internal item ids in time order (the whole file's events)."""
    inter = dataset.inter_feat
    users = np.asarray(inter[dataset.uid_field])
    items = np.asarray(inter[dataset.iid_field])
    times = np.asarray(inter[dataset.time_field])
    order = np.lexsort((times, users))
    users, items, times = users[order], items[order], times[order]
    if np.any((times != np.round(times)) | (times < 0)):
        raise InputError("timestamps must be event positions 0, 1, 2, ... per user")
    starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]])
    ends = np.r_[starts[1:], len(users)]
    return {int(users[s]): items[s:e] for s, e in zip(starts, ends, strict=True)}


def make_trainer_class(base: type) -> type:
    """RecBole's ``Trainer`` timing each epoch, keeping the best state in memory and (unless
    ``histories`` is None) removing each user's earlier items from the full ranking."""

    class TimedTrainer(base):  # type: ignore[misc, valid-type]
        def __init__(
            self,
            config: Any,
            model: Any,
            histories: dict[int, np.ndarray] | None,
            max_seconds: float | None,
        ):
            super().__init__(config, model)
            self.histories = histories
            self.max_seconds = max_seconds
            self.curve: list[dict[str, float]] = []
            self.train_seconds = 0.0
            self.best_state: dict[str, torch.Tensor] | None = None
            self.best_epoch = 0
            self.last_valid: dict[str, float] = {}
            self.began = 0.0

        def _train_epoch(self, train_data, epoch_idx, loss_func=None, show_progress=False):
            began = time.perf_counter()
            loss = super()._train_epoch(train_data, epoch_idx, loss_func, show_progress)
            self.train_seconds += time.perf_counter() - began
            return loss

        def _valid_epoch(self, valid_data, show_progress=False):
            score, result = super()._valid_epoch(valid_data, show_progress)
            self.last_valid = {k: float(v) for k, v in result.items()}
            return score, result

        def _save_checkpoint(self, epoch, verbose=True, **kwargs):
            self.best_state = copy.deepcopy(self.model.state_dict())
            self.best_epoch = epoch + 1

        def _full_sort_batch_eval(self, batched_data):
            interaction, scores, positive_u, positive_i = super()._full_sort_batch_eval(
                batched_data
            )
            if self.histories is not None:
                users = interaction[self.config["USER_ID_FIELD"]].tolist()
                positions = interaction[self.config["TIME_FIELD"]].long().tolist()
                earlier = [self.histories[u][:p] for u, p in zip(users, positions, strict=True)]
                rows = np.repeat(np.arange(len(earlier)), [len(h) for h in earlier])
                scores[torch.from_numpy(rows), torch.from_numpy(np.concatenate(earlier))] = -np.inf
            return interaction, scores, positive_u, positive_i

        def record_epoch(self, epoch_idx: int, valid_score: float) -> None:
            record = {
                "epoch": epoch_idx + 1,
                "train_seconds": self.train_seconds,
                "wall_seconds": time.perf_counter() - self.began,
                "NDCG@10": float(valid_score),
                "HR@10": self.last_valid.get("hit@10"),
                "loss": float(self.train_loss_dict[epoch_idx]),
            }
            self.curve.append(record)
            print(
                f"epoch {record['epoch']}: loss {record['loss']:.4f}  "
                f"val NDCG@10 {record['NDCG@10']:.4f}  {record['wall_seconds']:.0f}s",
                file=sys.stderr,
                flush=True,
            )
            # RecBole calls this after the epoch's early-stopping update and checkpoint
            if self.max_seconds is not None and record["wall_seconds"] >= self.max_seconds:
                raise BudgetSpent

    return TimedTrainer


def write_json_atomic(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(handle, "w", encoding="utf-8") as stream:
        json.dump(payload, stream, indent=2)
        stream.write("\n")
    os.replace(temporary, path)


MODEL_SETTINGS = (
    "hidden_size",
    "inner_size",
    "n_layers",
    "n_heads",
    "hidden_dropout_prob",
    "attn_dropout_prob",
    "hidden_act",
    "layer_norm_eps",
    "initializer_range",
    "loss_type",
    "MAX_ITEM_LIST_LENGTH",
    "learner",
    "learning_rate",
    "weight_decay",
    "train_batch_size",
    "eval_batch_size",
    "epochs",
    "stopping_step",
    "seed",
)


def train_and_test(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """Build RecBole's dataset from ``workdir``, train SASRec, test its best epoch."""
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.model.sequential_recommender import SASRec
    from recbole.trainer import Trainer
    from recbole.utils import init_seed

    began = time.perf_counter()
    # RecBole's Config also reads ``--key=value`` settings from sys.argv: give it none
    argv, sys.argv = sys.argv, sys.argv[:1]
    try:
        config = Config(
            model="SASRec", dataset=DATASET_NAME, config_dict=recbole_config(args, workdir)
        )
    finally:
        sys.argv = argv
    init_seed(config["seed"], config["reproducibility"])
    dataset = create_dataset(config)
    # before data_preparation, which leaves only the training part in inter_feat
    events = int(dataset.inter_num)
    histories = None if args.keep_seen else user_histories(dataset)
    train_data, valid_data, test_data = data_preparation(config, dataset)
    init_seed(config["seed"] + config["local_rank"], config["reproducibility"])
    model = SASRec(config, train_data._dataset).to(config["device"])
    trainer = make_trainer_class(Trainer)(config, model, histories, args.max_seconds)
    setup_seconds = time.perf_counter() - began
    trainer.began = time.perf_counter()
    try:
        trainer.fit(
            train_data, valid_data, saved=True, verbose=False, callback_fn=trainer.record_epoch
        )
        stopped_by = "epochs" if len(trainer.curve) == args.epochs else "early stopping"
    except BudgetSpent:
        stopped_by = f"time budget (--max-seconds {args.max_seconds:g})"
    fit_seconds = time.perf_counter() - trainer.began
    if trainer.best_state is None:
        raise InputError("training ended without a validated epoch")
    model.load_state_dict(trainer.best_state)
    began = time.perf_counter()
    test = trainer.evaluate(test_data, load_best_model=False)
    best = trainer.curve[trainer.best_epoch - 1]
    return {
        "model": {key: config[key] for key in MODEL_SETTINGS},
        "items": int(dataset.item_num - 1),
        "events": events,
        "curve": trainer.curve,
        "best_epoch": best["epoch"],
        "best_valid_ndcg10": best["NDCG@10"],
        "test": {"HR@10": float(test["hit@10"]), "NDCG@10": float(test["ndcg@10"])},
        "setup_seconds": setup_seconds,
        "fit_seconds": fit_seconds,
        "test_seconds": time.perf_counter() - began,
        "epochs": len(trainer.curve),
        "stopped_by": stopped_by,
    }


def run(args: argparse.Namespace, argv: list[str]) -> dict[str, Any]:
    """The results of RecBole's SASRec on ``args.data``, as written to JSON."""
    import pandas
    import recbole

    data_path = Path(args.data).resolve()
    sequences = read_sequences(data_path, args.users)
    torch.set_num_threads(1)
    # pandas 2 warns on RecBole's chained in-place fills, which still work before pandas 3
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"recbole\.")
    home = Path.cwd()
    with tempfile.TemporaryDirectory(prefix="recbole-peer-") as work:
        workdir = Path(work)
        write_inter(sequences, workdir)
        # RecBole writes its tensorboard folder under the working directory
        os.chdir(workdir)
        try:
            outcome = train_and_test(args, workdir)
        finally:
            os.chdir(home)
    seen = (
        "kept, as RecBole does (--keep-seen)"
        if args.keep_seen
        else "every item of the user's history before the target is removed from the "
        "ranking, as evorec does"
    )
    return {
        "peer": "RecBole SASRec",
        "command": shlex.join(["bash", SCRIPT, *argv]),
        "dataset": {
            "path": args.data,
            "name": data_path.stem,
            "users": len(sequences),
            "items": outcome.pop("items"),
            "events": outcome.pop("events"),
            # leave-one-out treats such users differently in RecBole and evorec
            "users_under_3_events": sum(len(items) < 3 for _, items in sequences),
        },
        "protocol": {
            "split": "leave-one-out (RecBole LS valid_and_test, order TO, group_by user): "
            "last event test, second-to-last validation",
            "ranking": "full ranking over all items (RecBole mode full), no sampled negatives",
            "filter_seen": "RecBole's full-sort evaluation of a sequential model masks only "
            f"the padding item; here history items are {seen}",
            "seen_items_removed": not args.keep_seen,
            "ties": "torch.topk order (RecBole); evorec breaks ties at random",
            "early_stopping": f"validation NDCG@10, patience {args.patience}",
            "selection": "the epoch with the best validation NDCG@10; test metrics reported",
            "threads": torch.get_num_threads(),
            "clock": "train_seconds: training alone; wall_seconds: training and validation "
            "since fit began; data preparation is setup_seconds",
        },
        **outcome,
        "versions": {
            "recbole": recbole.__version__,
            "torch": torch.__version__,
            "numpy": np.__version__,
            "pandas": pandas.__version__,
            "python": platform.python_version(),
        },
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
    }


def peer_main(
    peer: str,
    argv: list[str],
    parse: Callable[[list[str]], argparse.Namespace],
    run: Callable[[argparse.Namespace, list[str]], dict[str, Any]],
) -> int:
    """Parse, run, write the results atomically and print one line (bad input: exit 2)."""
    try:
        args = parse(argv)
        out = Path(args.out).resolve()
        results = run(args, argv)
    except InputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    write_json_atomic(out, results)
    print(
        f"{peer} SASRec: best val NDCG@10 {results['best_valid_ndcg10']:.4f} at epoch "
        f"{results['best_epoch']} ({results['fit_seconds']:.0f}s); test HR@10 "
        f"{results['test']['HR@10']:.4f} NDCG@10 {results['test']['NDCG@10']:.4f} -> {out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(peer_main("RecBole", sys.argv[1:], parse_args, run))
