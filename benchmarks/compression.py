"""Compression on Amazon Beauty and at a 1M-item catalogue: size, speed and accuracy kept.

Beauty (S3-Rec preprocessing, leave-one-out, full ranking, seen items filtered): a SASRec
teacher (dim 64, 2 blocks) trained with its epochs chosen on validation, then each
``evorec compress`` method applied to its model directory (no retraining, except the
distilled student); a dim-32 one-block student trained alone and the same student distilled
from the teacher (KL on the teacher's softmax over the catalogue mixed with the next-item
loss, epochs chosen on validation for both). For every model: ``state.pt`` (+ item index)
bytes on disk, bytes in memory (parameters and buffers, quantised weights, the item index),
encode latency of one history (median over users) and of a batch of 1,024, NDCG@10 on test
and its share of the teacher's, and end-to-end p50/p99 of ``GET
/users/{id}/recommendations?k=10`` against ``evorec serve`` (one sequential client on
127.0.0.1, the store filled with the dataset).

1M items: synthetic item vectors (a Gaussian mixture, dim 64) and interest queries; exact
float32 search against the quantised IVF-SQ8 and IVF-PQ indexes: index bytes, per-query
search latency p50/p99 and recall@10 against exact.

One torch and faiss thread; timings are ratios measured side by side in one run on a shared
machine.

    python benchmarks/compression.py --out benchmarks/results/compression-beauty.json \\
        --out-1m benchmarks/results/compression-1m.json
"""

from __future__ import annotations

import argparse
import io
import json
import time
from pathlib import Path
from typing import Any

import faiss
import httpx
import numpy as np
import torch

from evorec.data.load import load_dataset
from evorec.data.split import Split, leave_one_out
from evorec.evaluation.evaluator import evaluate
from evorec.models import SASRec
from evorec.models.base import Recommender
from evorec.retrieval import build_index, load_or_build_index
from evorec.serving.server import running_server
from evorec.store import EventStore
from evorec.training.compress import compress
from evorec.training.distill import distill

METHODS = ["fp16", "int8", "dynamic-int8", "prune", "sq8", "dynamic-int8+sq8"]
DATA = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "amazon-s3rec"


def disk_bytes(path: Path) -> int:
    """``state.pt`` and any item index of a model directory."""
    files = [path / "state.pt", *path.glob("item-index-*.faiss")]
    return sum(file.stat().st_size for file in files)


def memory_bytes(model: Recommender, path: Path) -> int:
    """The network's state as held in memory (quantised weights at their packed size) and
    the item index the service searches."""
    buffer = io.BytesIO()
    torch.save(model.fitted_network().state_dict(), buffer)
    index = load_or_build_index(path, np.ascontiguousarray(model.item_vectors(), np.float32))
    return buffer.getbuffer().nbytes + len(faiss.serialize_index(index.index))


def encode_latency(model: Recommender, split: Split, users: int) -> dict[str, float]:
    histories = split.test.histories
    rng = np.random.default_rng(0)
    rows = rng.choice(len(histories), users, replace=False)
    single = []
    for row in rows:
        began = time.perf_counter()
        model.encode(histories.take([row]))
        single.append(time.perf_counter() - began)
    batch = histories.take(rng.choice(len(histories), 1024, replace=False))
    began = time.perf_counter()
    model.encode(batch)
    return {
        "encode_one_ms": 1e3 * float(np.median(single)),
        "encode_1024_ms": 1e3 * (time.perf_counter() - began),
    }


def http_latency(path: Path, db: str, users: list[str], work: Path) -> dict[str, float]:
    elapsed = []
    log = work / f"{path.name}-server.log"
    with (
        running_server(path, db, log=log) as server,
        httpx.Client(base_url=server.url, timeout=60) as client,
    ):
        for n, user in enumerate(users):
            began = time.perf_counter()
            response = client.get(f"/users/{user}/recommendations", params={"k": 10})
            if n >= 10:  # the first requests warm the server up
                elapsed.append(time.perf_counter() - began)
            assert response.status_code == 200, response.text
    return {
        "http_p50_ms": 1e3 * float(np.percentile(elapsed, 50)),
        "http_p99_ms": 1e3 * float(np.percentile(elapsed, 99)),
    }


def measure(
    name: str, path: Path, split: Split, db: str, users: list[str], args: argparse.Namespace
) -> dict[str, Any]:
    model = Recommender.load(path)
    row: dict[str, Any] = {"model": name, "disk_bytes": disk_bytes(path)}
    row["memory_bytes"] = memory_bytes(model, path)
    row |= encode_latency(model, split, args.encode_users)
    row["NDCG@10"] = evaluate(model, split.test, ks=(10,)).metrics["NDCG@10"]
    row |= http_latency(path, db, users, args.work)
    row["best_epoch"] = model.fit_info.get("best_epoch")
    print(json.dumps(row))
    return row


def trained(path: Path, train: Any) -> tuple[Any, float]:
    """The model saved at ``path`` by an earlier run with the same ``--work``, or ``train()``
    saved there; with its training seconds."""
    if not (path / "evorec-model.json").is_file():
        began = time.perf_counter()
        model = train()
        model.fit_info["benchmark_seconds"] = time.perf_counter() - began
        model.save(path)
    model = Recommender.load(path)
    return model, model.fit_info["benchmark_seconds"]


def beauty(args: argparse.Namespace) -> dict[str, Any]:
    """The Beauty table, written to ``args.out`` after every row (students last)."""
    data = load_dataset(args.data)
    split = leave_one_out(data)
    common = {"device": "cpu", "max_len": 50, "patience": args.patience,
              "valid_users": args.valid_users}  # fmt: skip
    teacher_settings = {**common, "dim": 64, "layers": 2, "epochs": args.teacher_epochs}
    student_settings = {**common, "dim": 32, "layers": 1, "epochs": args.student_epochs}
    work = args.work
    teacher_dir = work / "teacher"
    teacher, teacher_seconds = trained(teacher_dir, lambda: SASRec(teacher_settings).fit(split))
    db_file = work / "events.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db_file}{suffix}").unlink(missing_ok=True)
    db = f"sqlite:///{db_file}"
    store = EventStore(db)
    store.import_dataset(split.full)
    store.close()
    rng = np.random.default_rng(0)
    ids = split.full.user_ids.cast(str).to_numpy()
    users = [str(u) for u in ids[rng.choice(len(ids), args.requests + 10, replace=False)]]
    result: dict[str, Any] = {
        "dataset": str(args.data),
        "protocol": "leave-one-out, full ranking, seen items filtered; epochs on validation",
        "teacher": teacher_settings,
        "student": student_settings,
        "distillation": {"alpha": args.alpha, "temperature": 1.0},
        "prune_sparsity": args.sparsity,
        "train_seconds": {"teacher": teacher_seconds},
        "requests": args.requests,
        "machine": "2 shared CPU cores, other processes running; one torch thread",
        "rows": [],
    }

    def add(name: str, path: Path) -> None:
        row = measure(name, path, split, db, users, args)
        base = result["rows"][0] if result["rows"] else row
        row["smaller_disk"] = base["disk_bytes"] / row["disk_bytes"]
        row["smaller_memory"] = base["memory_bytes"] / row["memory_bytes"]
        row["faster_encode_one"] = base["encode_one_ms"] / row["encode_one_ms"]
        row["faster_encode_1024"] = base["encode_1024_ms"] / row["encode_1024_ms"]
        row["faster_http_p50"] = base["http_p50_ms"] / row["http_p50_ms"]
        row["ndcg_retained"] = row["NDCG@10"] / base["NDCG@10"]
        result["rows"].append(row)
        write(args.out, result)

    add("teacher (float32)", teacher_dir)
    for method in args.methods.split(","):
        path = compress(teacher_dir, work / method.replace("+", "-"), method,
                        {"sparsity": args.sparsity})  # fmt: skip
        add(method, path)
    students = {
        "student alone": lambda: SASRec(student_settings).fit(split),
        "student distilled": lambda: distill(
            SASRec(student_settings), teacher, split, alpha=args.alpha
        ),
    }
    for name, train in students.items():
        path = work / name.replace(" ", "-")
        _, result["train_seconds"][name] = trained(path, train)
        add(name, path)
    return result


def write(out: Path, result: dict[str, Any]) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")


def million(args: argparse.Namespace) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    n, dim = args.items, 64
    centres = rng.standard_normal((1000, dim)).astype(np.float32)
    vectors = centres[rng.integers(0, 1000, n)] + 0.5 * rng.standard_normal((n, dim)).astype(
        np.float32
    )
    queries = centres[rng.integers(0, 1000, args.queries)] + 0.5 * rng.standard_normal(
        (args.queries, dim)
    ).astype(np.float32)
    settings = {"nlist": args.nlist, "nprobe": args.nprobe, "train_size": 50_000}
    rows = []
    exact_items = None
    for kind in ("exact", "sq8", "pq"):
        began = time.perf_counter()
        index = build_index(vectors, {"kind": kind, **({} if kind == "exact" else settings)})
        build_seconds = time.perf_counter() - began
        latencies, found = [], []
        for query in queries:
            began = time.perf_counter()
            found.append(index.search(query[None], 10)[1][0])
            latencies.append(time.perf_counter() - began)
        found_items = np.stack(found)
        if exact_items is None:
            exact_items = found_items
        recall = np.mean(
            [len(set(a) & set(b)) / 10 for a, b in zip(found_items, exact_items, strict=True)]
        )
        size = n * dim * 4 if kind == "exact" else len(faiss.serialize_index(index.index))
        rows.append({"index": kind, "bytes": size, "build_seconds": build_seconds,
                     "search_p50_ms": 1e3 * float(np.percentile(latencies, 50)),
                     "search_p99_ms": 1e3 * float(np.percentile(latencies, 99)),
                     "recall@10": float(recall)})  # fmt: skip
        print(json.dumps(rows[-1]))
    for row in rows:
        row["smaller"] = rows[0]["bytes"] / row["bytes"]
        row["faster_p50"] = rows[0]["search_p50_ms"] / row["search_p50_ms"]
    return {
        "items": n,
        "dim": dim,
        "vectors": "synthetic Gaussian mixture (1,000 centres, noise 0.5)",
        "queries": args.queries,
        "ivf": settings,
        "machine": "2 shared CPU cores, other processes running; one faiss thread",
        "rows": rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DATA / "Beauty.txt")
    parser.add_argument("--work", type=Path, default=Path("runs/compression"))
    parser.add_argument(
        "--out", type=Path, default=Path("benchmarks/results/compression-beauty.json")
    )
    parser.add_argument(
        "--out-1m", type=Path, default=Path("benchmarks/results/compression-1m.json")
    )
    parser.add_argument("--teacher-epochs", type=int, default=30)
    parser.add_argument("--student-epochs", type=int, default=30)
    parser.add_argument("--patience", type=int, default=3)
    parser.add_argument("--valid-users", type=int, default=3000)
    parser.add_argument("--alpha", type=float, default=0.5)
    parser.add_argument("--sparsity", type=float, default=0.5)
    parser.add_argument("--encode-users", type=int, default=200)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--nlist", type=int, default=1024)
    parser.add_argument("--nprobe", type=int, default=32)
    parser.add_argument("--skip-beauty", action="store_true")
    parser.add_argument("--skip-1m", action="store_true")
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated")
    args = parser.parse_args()
    torch.set_num_threads(1)
    faiss.omp_set_num_threads(1)
    args.work.mkdir(parents=True, exist_ok=True)
    runs = [(beauty, args.out, args.skip_beauty), (million, args.out_1m, args.skip_1m)]
    for run, out, skip in runs:
        if skip:
            continue
        write(out, run(args))
        print(f"written to {out}")


if __name__ == "__main__":
    main()
