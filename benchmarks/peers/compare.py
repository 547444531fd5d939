"""evorec against a peer run side by side: how much sooner evorec first reaches the peer's
best validation NDCG@10, and both test results.

Reads the peer's results (``--peer``, alias ``--recbole``: ``benchmarks/peers/recbole_sasrec.sh``
or ``rectools_sasrec.sh``) and an ``evorec bench`` results file, writes JSON (``--out``) and a
Markdown table beside it (``.md``) and prints the table. The ratio is the peer's seconds to its
best validation epoch divided by evorec's seconds to the first epoch whose validation NDCG@10
is at least as high, on two clocks: training and validation together (``wall``) and training
alone (``train``). With several seeds in the evorec row each seed counts on its own and the
ratio uses the mean of their times (none when a seed never got there).

    python benchmarks/peers/compare.py \\
        --recbole benchmarks/results/peers-recbole-beauty.json \\
        --evorec benchmarks/results/peers-evorec-beauty.json \\
        --out benchmarks/results/peers-beauty.json
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import tempfile
from pathlib import Path
from typing import Any


class InputError(Exception):
    """A missing or malformed results file: reported as one line."""


def load_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise InputError(f"{path}: not JSON ({error})") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a JSON object")
    return data


def field(data: dict[str, Any], key: str, path: Path, where: str = "") -> Any:
    if key not in data:
        raise InputError(f"{path}: no '{key}'{where}")
    return data[key]


def first_reaching(curve: list[dict[str, Any]], target: float) -> dict[str, Any] | None:
    return next((point for point in curve if point["NDCG@10"] >= target), None)


def evorec_curves(row: dict[str, Any], path: Path, model: str) -> list[list[dict[str, Any]]]:
    """Per seed, the validation curve as ``{epoch, train_seconds, NDCG@10, wall_seconds}``
    (``wall_seconds`` None in files written before the curve carried it)."""
    runs = row.get("runs") or [row]
    curves = []
    for run in runs:
        points = field(run, "valid_curve", path, f" in model '{model}'")
        curve = []
        for point in points:
            if not isinstance(point, list) or len(point) not in (3, 4):
                raise InputError(f"{path}: model '{model}': bad valid_curve entry {point!r}")
            epoch, train_seconds, ndcg, *wall = point
            if ndcg is None:
                raise InputError(f"{path}: model '{model}' was trained without validation")
            curve.append(
                {
                    "epoch": epoch,
                    "train_seconds": train_seconds,
                    "NDCG@10": ndcg,
                    "wall_seconds": wall[0] if wall else None,
                }
            )
        curves.append(curve)
    return curves


def mean(values: list[float]) -> float:
    return sum(values) / len(values)


def compare(
    peer: dict[str, Any], peer_path: Path, bench: dict[str, Any], bench_path: Path, model: str
) -> dict[str, Any]:
    name = field(peer, "dataset", peer_path)["name"]
    entries = field(bench, "datasets", bench_path)
    entry = next((e for e in entries if e.get("name") == name), None)
    if entry is None:
        raise InputError(f"{bench_path}: no dataset '{name}' (the peer's dataset)")
    rows = field(entry, "models", bench_path, f" in dataset '{name}'")
    row = field(rows, model, bench_path, f" in dataset '{name}'")
    target = float(field(peer, "best_valid_ndcg10", peer_path))
    peer_curve = field(peer, "curve", peer_path)
    peer_best = first_reaching(peer_curve, target)
    if peer_best is None:
        raise InputError(f"{peer_path}: best_valid_ndcg10 {target} is not on its curve")
    notes = []
    for count in ("users", "items", "events"):
        peer_count, evorec_count = peer["dataset"].get(count), entry.get("stats", {}).get(count)
        if peer_count != evorec_count:
            notes.append(f"different data: {count} peer {peer_count}, evorec {evorec_count}")
    if peer.get("protocol", {}).get("seen_items_removed") != entry.get("filter_seen"):
        notes.append("seen items are treated differently by the two rankings")
    if str(peer.get("stopped_by", "")).startswith("time budget"):
        notes.append(f"the peer stopped on its {peer['stopped_by']}: its best is within that")
    reached = [first_reaching(curve, target) for curve in evorec_curves(row, bench_path, model)]
    clocks: dict[str, Any] = {}
    for clock in ("wall_seconds", "train_seconds"):
        times = [point[clock] if point else None for point in reached]
        if any(point and point[clock] is None for point in reached):
            notes.append(f"the evorec file has no {clock} per epoch")
            continue
        evorec_seconds = mean(times) if None not in times else None
        clocks[clock.removesuffix("_seconds")] = {
            "peer_seconds": peer_best[clock],
            "evorec_seconds": evorec_seconds,
            "evorec_seconds_per_seed": times,
            "speedup": peer_best[clock] / evorec_seconds if evorec_seconds else None,
        }
    std = row.get("std", {})
    return {
        "dataset": name,
        "model": model,
        "peer": peer.get("peer", "peer"),
        "target_valid_ndcg10": target,
        "peer_best_epoch": peer_best["epoch"],
        "evorec_epoch_reaching": [point["epoch"] if point else None for point in reached],
        "evorec_best_valid_ndcg10": row.get("best_valid_ndcg10"),
        "clocks": clocks,
        "test": {
            "peer": field(peer, "test", peer_path),
            "evorec": {m: row.get(m) for m in ("HR@10", "NDCG@10")},
            "evorec_std": {m: std[m] for m in ("HR@10", "NDCG@10") if m in std},
            "evorec_seeds": row.get("seeds"),
        },
        "notes": notes,
        "sources": {"peer": str(peer_path), "evorec": str(bench_path)},
        "peer_command": peer.get("command"),
    }


def cell(value: Any, digits: int = 4) -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def markdown(result: dict[str, Any]) -> str:
    target = result["target_valid_ndcg10"]
    lines = [
        f"{result['dataset']}: {result['peer']} vs evorec {result['model']} "
        f"(target: the peer's best validation NDCG@10 {target:.4f}, epoch "
        f"{result['peer_best_epoch']})",
        "",
        "| clock | peer s | evorec s | evorec × faster |",
        "|---|---|---|---|",
    ]
    for clock, numbers in result["clocks"].items():
        lines.append(
            f"| {clock} | {cell(numbers['peer_seconds'], 0)} | "
            f"{cell(numbers['evorec_seconds'], 0)} | {cell(numbers['speedup'], 1)} |"
        )
    test = result["test"]
    spread = {m: f" ± {s:.4f}" for m, s in test["evorec_std"].items()}
    lines += [
        "",
        "| test | HR@10 | NDCG@10 |",
        "|---|---|---|",
        f"| {result['peer']} | {cell(test['peer']['HR@10'])} | {cell(test['peer']['NDCG@10'])} |",
        f"| evorec {result['model']} | {cell(test['evorec']['HR@10'])}{spread.get('HR@10', '')} "
        f"| {cell(test['evorec']['NDCG@10'])}{spread.get('NDCG@10', '')} |",
    ]
    lines += [f"\nNote: {note}" for note in result["notes"]]
    return "\n".join(lines) + "\n"


def write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(handle, "w", encoding="utf-8") as stream:
        stream.write(text)
    os.replace(temporary, path)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--peer",
        "--recbole",
        dest="peer",
        type=Path,
        required=True,
        help="the peer's results (recbole_sasrec.sh or rectools_sasrec.sh)",
    )
    parser.add_argument("--evorec", type=Path, required=True, help="evorec bench results")
    parser.add_argument("--model", default="sasrec", help="model row of the evorec file")
    parser.add_argument("--out", type=Path, help="comparison JSON (.md written beside)")
    args = parser.parse_args(argv)
    try:
        result = compare(
            load_json(args.peer), args.peer, load_json(args.evorec), args.evorec, args.model
        )
    except InputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    result["command"] = shlex.join(["python", "benchmarks/peers/compare.py", *argv])
    table = markdown(result)
    print(table, end="")
    if args.out is not None:
        write_atomic(args.out, json.dumps(result, indent=2) + "\n")
        write_atomic(args.out.with_suffix(".md"), table)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
