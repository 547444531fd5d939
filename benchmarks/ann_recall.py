"""ANN retrieval at catalogue scale: recall@K and speed of HNSW and IVF against exact search.

The catalogue grows from the item vectors of a SASRec model trained on a real dataset: the
real items first, then synthetic items drawn as a Gaussian mixture around them (a real item
plus noise scaled by the per-dimension spread of the real vectors). Queries are the interest
vectors of real users of that model; with seen-item filtering each query excludes its user's
history. Exact search (same process, same queries) gives the truth and the speed baseline.

    python benchmarks/ann_recall.py --model-dir runs/ann-beauty-sasrec --items 1000000
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

import evorec
from evorec.retrieval import ItemIndex, IVFIndex, build_index

Result = tuple[np.ndarray, np.ndarray]


def catalogue(real: np.ndarray, n_items: int, noise: float, seed: int) -> np.ndarray:
    """``real`` followed by ``n_items - len(real)`` mixture samples around its rows."""
    rng = np.random.default_rng(seed)
    extra = n_items - len(real)
    centres = rng.integers(0, len(real), extra)
    spread = real.std(0, keepdims=True)
    synthetic = real[centres] + noise * spread * rng.standard_normal((extra, real.shape[1]))
    return np.ascontiguousarray(np.concatenate([real, synthetic]), dtype=np.float32)


def timed(fn: Callable[[], Result], repeats: int) -> tuple[float, Result]:
    """Median seconds of ``repeats`` calls of ``fn`` and its last result."""
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds), result


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    hits = [
        len(set(f[f >= 0]) & set(t[t >= 0])) / max(1, (t >= 0).sum())
        for f, t in zip(found, truth, strict=True)
    ]
    return float(np.mean(hits))


def index_megabytes(index: ItemIndex) -> float:
    """Serialized index size, plus the vector copy an IVF index keeps for exact scoring."""
    with tempfile.TemporaryDirectory() as tmp:
        size = index.save(Path(tmp) / "index.faiss").stat().st_size
    if isinstance(index, IVFIndex):
        size += index.vectors.nbytes
    return size / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", required=True, help="a trained evorec model (SASRec)")
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--noise", type=float, default=0.5, help="mixture spread (x real std)")
    parser.add_argument("--isotropic", action="store_true", help="pure Gaussian vectors instead")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--hnsw-m", type=int, default=16)
    parser.add_argument("--ef-construction", type=int, default=100)
    parser.add_argument("--ef-search", default="32,64,128,256")
    parser.add_argument("--nprobe", default="8,16,32,64")
    parser.add_argument("--kinds", default="hnsw,ivf")
    parser.add_argument(
        "--hard-exclude",
        type=int,
        default=50,
        help="also exclude each query's exact top-N (the items ANN finds first); 0: off",
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    model = evorec.load_model(args.model_dir)
    dataset = model.dataset
    rng = np.random.default_rng(args.seed)
    rows = np.sort(rng.choice(dataset.n_users, min(args.queries, dataset.n_users), replace=False))
    histories = dataset.histories.take(rows)
    with torch.inference_mode():
        queries = np.ascontiguousarray(model.encode(histories), dtype=np.float32)
        real = np.ascontiguousarray(model.item_vectors(), dtype=np.float32)
    exclude = [histories[r] for r in range(len(histories))]
    if args.isotropic:
        items = rng.standard_normal((args.items, real.shape[1])).astype(np.float32)
        queries = rng.standard_normal(queries.shape).astype(np.float32)
        source = "isotropic Gaussian items and queries"
    else:
        items = catalogue(real, args.items, args.noise, args.seed)
        source = f"{len(real)} real SASRec items + mixture (noise {args.noise})"
    print(
        f"catalogue: {len(items):,} items x {items.shape[1]} ({source}); "
        f"{len(queries)} user queries, mean history {np.mean([len(e) for e in exclude]):.1f}; "
        f"torch threads {torch.get_num_threads()}"
    )

    print(f"\nrecall@{args.k} against exact search; queries/s: median of {args.repeats} runs")
    print(f"| index | setting | excluded | recall@{args.k} | queries/s | × exact | build s | MB |")
    print("|---|---|---|---|---|---|---|---|")

    def row(
        kind: str, setting: str, mode: str, rec: float, qps: float, build: float, mb: float
    ) -> None:
        print(
            f"| {kind} | {setting} | {mode} | {rec:.4f} | {qps:,.0f} "
            f"| {qps / base_qps[mode]:.1f} | {build:.0f} | {mb:,.0f} |"
        )

    exact = build_index(items, {"kind": "exact"})
    modes: dict[str, list[np.ndarray] | None] = {"none": None, "history": exclude}
    if args.hard_exclude:
        _, top = exact.search(queries, args.hard_exclude)
        modes[f"history + top {args.hard_exclude}"] = [
            np.union1d(e, t) for e, t in zip(exclude, top, strict=True)
        ]
    truth: dict[str, np.ndarray] = {}
    base_qps: dict[str, float] = {}
    for mode, excluded in modes.items():
        seconds, (_, truth[mode]) = timed(
            lambda e=excluded: exact.search(queries, args.k, e), args.repeats
        )
        base_qps[mode] = len(queries) / seconds
        row("exact", "-", mode, 1.0, base_qps[mode], 0.0, index_megabytes(exact))

    settings = {"hnsw": ("ef_search", args.ef_search), "ivf": ("nprobe", args.nprobe)}
    for kind in args.kinds.split(","):
        field, values = settings[kind]
        config = {"kind": kind, "hnsw_m": args.hnsw_m, "ef_construction": args.ef_construction}
        start = time.perf_counter()
        index = build_index(items, config)
        build_s = time.perf_counter() - start
        megabytes = index_megabytes(index)
        for value in (int(v) for v in values.split(",")):
            index.config = index.config.model_copy(update={field: value})
            for mode, excluded in modes.items():
                seconds, (_, found) = timed(
                    lambda e=excluded, i=index: i.search(queries, args.k, e), args.repeats
                )
                rec = recall(found, truth[mode])
                row(kind, f"{field}={value}", mode, rec, len(queries) / seconds, build_s, megabytes)


if __name__ == "__main__":
    main()
