"""Property-based requests against ``evorec serve``: schemathesis with every check, many
examples per operation, the counts and failures written as JSON.

The server runs as its own process (``python -m evorec.cli.main serve``) on 127.0.0.1 with
an API key and a fresh SQLite store, serving a small SASRec trained on simulated users;
schemathesis (settings in ``schemathesis.toml``) runs its coverage, fuzzing and stateful
phases against ``/openapi.json``. ``tests/serving/test_api_fuzz.py`` runs the same with few
examples.

    python benchmarks/fuzz_api.py --work runs/fuzz-api --out benchmarks/results/api_fuzz.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import torch

import evorec
from evorec.data.preprocess import PreprocessConfig, preprocess
from evorec.data.simulate import simulate
from evorec.serving.server import running_server

KEY = "fuzz-key"
ROOT = Path(__file__).resolve().parents[1]


def build_model(work: Path) -> Path:
    path = work / "models" / "sim"
    if (path / "evorec-model.json").is_file():
        return path
    torch.set_num_threads(1)
    sim = simulate(n_users=300, n_items=200, n_topics=8, seed=0)
    data = preprocess(sim.raw, PreprocessConfig(min_user_events=5, min_item_events=5))
    return evorec.SASRec(epochs=2, dim=32, max_len=50, device="cpu").fit(data).save(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=Path("runs/fuzz-api"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/api_fuzz.json"))
    parser.add_argument("--max-examples", type=int, default=300)
    parser.add_argument("--seed", type=int, default=2026)
    args = parser.parse_args()

    args.work.mkdir(parents=True, exist_ok=True)
    model_dir = build_model(args.work)
    db = args.work / "events.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    log = args.work / "server.log"
    report = args.work / "schemathesis.json"
    with running_server(model_dir, f"sqlite:///{db}", "--api-key", KEY, log=log) as server:
        fuzz = [sys.executable, "-m", "schemathesis.cli", "--no-color"]
        fuzz += ["--config-file", str(ROOT / "schemathesis.toml")]
        fuzz += ["run", f"{server.url}/openapi.json"]
        fuzz += ["--checks", "all", "--header", f"X-API-Key: {KEY}"]
        fuzz += ["--max-examples", str(args.max_examples), "--seed", str(args.seed)]
        fuzz += ["--report", "json", "--report-json-path", str(report)]
        print(" ".join(fuzz[1:]))
        completed = subprocess.run(fuzz, capture_output=True, text=True)
        print(completed.stdout[-3000:])
    summary = json.loads(report.read_text())
    server_errors = log.read_text().count("Traceback")
    result = {
        "schemathesis": summary["schemathesis_version"],
        "checks": "all",
        "max_examples": args.max_examples,
        "seed": args.seed,
        "operations": summary["operations"]["tested"],
        "test_cases": summary["test_cases"]["generated"],
        "failures": len(summary["failures"]),
        "errors": len(summary["errors"]),
        "phases": {name: phase["status"] for name, phase in summary["phases"].items()},
        "server_tracebacks": server_errors,
        "exit_code": completed.returncode,
        "seconds": round(summary["running_time"], 1),
    }
    print(json.dumps(result, indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
