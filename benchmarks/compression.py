"""Compression on Amazon Beauty and at a 1M-item catalogue: size, speed and accuracy kept.

Beauty (S3-Rec preprocessing, leave-one-out, full ranking, seen items filtered): a SASRec
teacher (dim 64, 2 blocks) trained with its epochs chosen on validation, then each
``evorec compress`` method applied to its model directory (no retraining, except the
distilled student); a dim-32 one-block student trained alone and the same student distilled
from the teacher (KL on the teacher's softmax over the catalogue mixed with the next-item
loss, epochs chosen on validation for both). For every model: ``state.pt`` (+ item index)
bytes on disk, bytes in memory (what the served model holds: the network's tensors, with
quantised weights at their packed size, its item vectors and an ANN index: ``held_bytes``),
encode latency of one history (median over users) and of a batch of 1,024, NDCG@10 on test
and its share of the teacher's, and end-to-end p50/p99 of ``GET
/users/{id}/recommendations?k=10`` against ``evorec serve`` (one sequential client on
127.0.0.1, the store filled with the dataset).

1M items: synthetic item vectors (a Gaussian mixture, dim 64) and interest queries; exact
float32 search against the quantised IVF-SQ8 and IVF-PQ indexes: index bytes, per-query
search latency p50/p99 and recall@10 against exact.

In memory (``--memory``, written to ``--out-memory``): the teacher (float32) and its ``fp16``
and ``int8`` copies, each loaded as the service loads it: the bytes of the network's tensors,
of its item table, and of the item vectors the served model holds (the table, the index's
vectors and the unit vectors of similar items; memory shared by views counted once); and, in
a fresh process per model, the resident memory after the imports, after loading the model
and at its peak while it serves top-10 recommendations to ``--memory-users`` users.

One torch and faiss thread; timings are ratios measured side by side in one run on a shared
machine.

    python benchmarks/compression.py --out benchmarks/results/compression-beauty.json \\
        --out-1m benchmarks/results/compression-1m.json
    python benchmarks/compression.py --memory --teacher-epochs 1 \\
        --out-memory benchmarks/results/compression-beauty-memory.json
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import time
from collections.abc import Iterable
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
from evorec.retrieval import build_index
from evorec.retrieval.index import ANNIndex
from evorec.retrieval.ranking import Int8Vectors, ItemVectors
from evorec.serving.engine import ServedModel
from evorec.serving.server import running_server
from evorec.store import EventStore
from evorec.training.compress import compress
from evorec.training.distill import distill

METHODS = ["fp16", "int8", "dynamic-int8", "prune", "sq8", "dynamic-int8+sq8"]
MEMORY_METHODS = ["fp16", "int8"]
DATA = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "amazon-s3rec"


def disk_bytes(path: Path) -> int:
    """``state.pt`` and any item index of a model directory."""
    files = [path / "state.pt", *path.glob("item-index-*.faiss")]
    return sum(file.stat().st_size for file in files)


Span = tuple[int, int]  # (first address, one past the last) of a block of memory


def spans(values: Iterable[Any]) -> list[Span]:
    """The memory of tensors and arrays (and of the tensors in tuples: packed quantised
    weights)."""
    out = []
    for value in values:
        if isinstance(value, tuple):
            out += spans(value)
        elif isinstance(value, torch.Tensor):
            out.append((value.data_ptr(), value.data_ptr() + value.numel() * value.element_size()))
        elif isinstance(value, np.ndarray):
            start = value.__array_interface__["data"][0]
            out.append((start, start + value.nbytes))
    return out


def vector_arrays(vectors: ItemVectors) -> list[np.ndarray]:
    return [vectors.codes, vectors.scale] if isinstance(vectors, Int8Vectors) else [vectors]


def covered(blocks: list[Span]) -> int:
    """Bytes the blocks cover, overlaps (views of one buffer) counted once."""
    total, reached = 0, 0
    for start, stop in sorted(blocks):
        total += max(0, stop - max(start, reached))
        reached = max(reached, stop)
    return total


def held_bytes(served: ServedModel) -> dict[str, int]:
    """What a served model holds: its network's tensors (quantised weights at their packed
    size), its item table, the item vectors of the table, the index and the unit vectors
    of similar items together, and an ANN index's faiss structure (its serialised size)."""
    network = served.model.fitted_network()
    tensors = spans(network.state_dict().values())
    table = spans([*network.item_embedding.parameters(), *network.item_embedding.buffers()])
    index = served.index
    vectors = table + spans(vector_arrays(index.vectors) + vector_arrays(served.unit_vectors))
    faiss_bytes = len(faiss.serialize_index(index.index)) if isinstance(index, ANNIndex) else 0
    return {
        "network_tensor_bytes": covered(tensors),
        "item_table_bytes": covered(table),
        "served_item_vector_bytes": covered(vectors),
        "memory_bytes": covered(tensors + vectors) + faiss_bytes,
    }


def rss_bytes(field: str = "VmRSS") -> int:
    """This process's resident memory now (``VmRSS``) or at its peak (``VmHWM``: unlike
    ``ru_maxrss``, not inherited from the parent across the spawn's exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def serve_rss(path: Path, users: int) -> dict[str, float]:
    """In a fresh process: resident memory after the imports, after loading ``path`` as the
    service does, and at the peak while top 10 is served to ``users`` users (at most all)."""
    torch.set_num_threads(1)
    faiss.omp_set_num_threads(1)
    before = rss_bytes()
    served = ServedModel(path)
    loaded = rss_bytes()
    histories = served.dataset.histories
    rows = np.random.default_rng(0).choice(len(histories), min(users, len(histories)), False)
    began = time.perf_counter()
    for row in rows:
        history = histories.take([row])
        served.recommend(history, 10, history[0], None)
    seconds = time.perf_counter() - began
    return {
        "rss_after_imports_bytes": before,
        "rss_after_load_bytes": loaded,
        "peak_rss_bytes": rss_bytes("VmHWM"),
        "users_served": len(rows),
        "serve_seconds": seconds,
    }


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
    row["memory_bytes"] = held_bytes(ServedModel(path))["memory_bytes"]
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


def settings(args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, Any]]:
    """The teacher's and the student's SASRec settings."""
    common = {"device": "cpu", "max_len": 50, "patience": args.patience,
              "valid_users": args.valid_users}  # fmt: skip
    return (
        {**common, "dim": 64, "layers": 2, "epochs": args.teacher_epochs},
        {**common, "dim": 32, "layers": 1, "epochs": args.student_epochs},
    )


def beauty(args: argparse.Namespace) -> dict[str, Any]:
    """The Beauty table, written to ``args.out`` after every row (students last)."""
    data = load_dataset(args.data)
    split = leave_one_out(data)
    teacher_settings, student_settings = settings(args)
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


def memory(args: argparse.Namespace) -> dict[str, Any]:
    """The in-memory sizes of the teacher and its fp16 and int8 copies on Beauty."""
    split = leave_one_out(load_dataset(args.data))
    teacher_settings, _ = settings(args)
    teacher_dir = args.work / "teacher"
    _, teacher_seconds = trained(teacher_dir, lambda: SASRec(teacher_settings).fit(split))
    paths = {"teacher (float32)": teacher_dir}
    for method in MEMORY_METHODS:
        paths[method] = compress(teacher_dir, args.work / f"memory-{method}", method)
    spawn = multiprocessing.get_context("spawn")
    rows = []
    for name, path in paths.items():
        row: dict[str, Any] = {"model": name, "disk_bytes": disk_bytes(path)}
        row |= held_bytes(ServedModel(path))
        with spawn.Pool(1) as pool:  # a fresh process: its peak is this model's alone
            row |= pool.apply(serve_rss, (path, args.memory_users))
        rows.append(row)
        print(json.dumps(row))
    for row in rows:
        row["peak_over_imports_bytes"] = row["peak_rss_bytes"] - row["rss_after_imports_bytes"]
        for key in ("network_tensor_bytes", "item_table_bytes", "served_item_vector_bytes",
                    "memory_bytes", "peak_rss_bytes", "peak_over_imports_bytes"):  # fmt: skip
            row[f"smaller_{key.removesuffix('_bytes')}"] = rows[0][key] / row[key]
    return {
        "dataset": str(args.data),
        "teacher": teacher_settings,
        "train_seconds": {"teacher": teacher_seconds},
        "served": "ServedModel (as evorec serve loads it), exact index; top 10 per user, "
        "history items excluded, one user at a time",
        "machine": "2 shared CPU cores, another process running; one torch and faiss thread "
        "(timings not clean; sizes are)",
        "rows": rows,
    }


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
    parser.add_argument(
        "--memory", action="store_true", help="only the in-memory sizes (to --out-memory)"
    )
    parser.add_argument(
        "--out-memory", type=Path, default=Path("benchmarks/results/compression-beauty-memory.json")
    )
    parser.add_argument("--memory-users", type=int, default=1000)
    args = parser.parse_args()
    torch.set_num_threads(1)
    faiss.omp_set_num_threads(1)
    args.work.mkdir(parents=True, exist_ok=True)
    runs = [(beauty, args.out, args.skip_beauty), (million, args.out_1m, args.skip_1m)]
    if args.memory:
        runs = [(memory, args.out_memory, False)]
    for run, out, skip in runs:
        if skip:
            continue
        write(out, run(args))
        print(f"written to {out}")


if __name__ == "__main__":
    main()
