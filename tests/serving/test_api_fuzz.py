"""Property-based requests generated from the service's own OpenAPI spec: schemathesis with
every check (no 500, every status, content type and body as the spec declares, invalid
input refused, schema-valid input accepted, the API key enforced, erased users gone).

The service runs under uvicorn on 127.0.0.1 in a thread of this process, over a real model
and store; schemathesis runs as its own process with a fixed seed and a bounded number of
examples per operation, well under a minute. ``benchmarks/fuzz_api.py`` runs the same
checks with many more examples against ``evorec serve``. The settings both read are in
``schemathesis.toml``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import torch

import evorec
from evorec.data.preprocess import PreprocessConfig, preprocess
from evorec.data.simulate import simulate
from evorec.serving import Service, create_app
from evorec.serving.server import running_app
from evorec.store import EventStore

KEY = "fuzz-key"
CONFIG = Path(__file__).resolve().parents[2] / "schemathesis.toml"
# what the spec declares whatever else is added
CORE_OPERATIONS = {
    ("POST", "/events"),
    ("GET", "/users/{user_id}/recommendations"),
    ("POST", "/recommendations"),
    ("GET", "/items/{item_id}/similar"),
    ("GET", "/users/{user_id}/history"),
    ("DELETE", "/users/{user_id}"),
    ("POST", "/admin/reload"),
    ("GET", "/health"),
    ("GET", "/metrics"),
}


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    work = tmp_path_factory.mktemp("fuzz")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    sim = simulate(n_users=150, n_items=80, n_topics=4, seed=5)
    data = preprocess(sim.raw, PreprocessConfig(min_user_events=5, min_item_events=5))
    model = evorec.SASRec(epochs=1, dim=16, max_len=20, device="cpu").fit(data)
    model_dir = model.save(work / "models" / "sim")
    torch.set_num_threads(threads)
    store = EventStore(f"sqlite:///{work / 'events.db'}")
    try:
        with running_app(create_app(Service(model_dir, store, api_key=KEY))) as url:
            yield url
    finally:
        store.close()


def test_generated_requests_get_the_replies_the_spec_declares(live: str, tmp_path: Path) -> None:
    report = tmp_path / "report.json"
    command = [sys.executable, "-m", "schemathesis.cli", "--no-color"]
    command += ["--config-file", str(CONFIG), "run", f"{live}/openapi.json", "--checks", "all"]
    command += ["--header", f"X-API-Key: {KEY}", "--max-examples", "25", "--seed", "14"]
    command += ["--report", "json", "--report-json-path", str(report)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-8000:] + result.stderr[-2000:]
    summary = json.loads(report.read_text())
    paths = httpx.get(f"{live}/openapi.json").json()["paths"]
    operations = {(method.upper(), path) for path, methods in paths.items() for method in methods}
    assert summary["operations"]["tested"] == len(operations)  # every operation in the spec
    assert operations >= CORE_OPERATIONS
    assert summary["test_cases"]["generated"] >= 300
    assert summary["failures"] == [] and summary["errors"] == []
