"""``evorec serve``: open the store, load the model, run the app under uvicorn."""

from __future__ import annotations

from pathlib import Path

import faiss
import torch
import uvicorn
from rich.console import Console

from evorec.serving.app import Service, create_app
from evorec.serving.watch import ModelWatcher
from evorec.store import EventStore


def serve(
    model_dir: Path,
    *,
    db: str | None,
    host: str,
    port: int,
    api_key: str | None,
    console: Console,
    watch: float | None = None,
) -> None:
    """Serve ``model_dir`` until interrupted; bad settings fail before the port opens.
    With ``watch`` (seconds), ``model_dir`` is polled and a new version swapped in."""
    store = EventStore(db)
    try:
        service = Service(model_dir, store, api_key=api_key)
        if service.seeded:
            console.print(f"store seeded with {service.seeded:,} training events")
        console.print(
            f"serving {service.current.model.name} model {service.current.version} on "
            f"http://{host}:{port} (store {store.display_url}"
            f"{', API key required for writes' if api_key else ''}"
            f"{f', watching {model_dir} every {watch:g}s' if watch else ''})",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
        # one intra-op thread per request: requests run in parallel already, and idle
        # OpenMP threads spinning between tiny kernels cost more CPU than the kernels
        torch.set_num_threads(1)
        faiss.omp_set_num_threads(1)
        watcher = ModelWatcher(service, model_dir, watch).start() if watch else None
        try:
            uvicorn.run(create_app(service), host=host, port=port, log_level="warning")
        finally:
            if watcher is not None:
                watcher.stop()
    finally:
        store.close()
