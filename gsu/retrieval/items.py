"""``ItemTable``: per-item features looked up by item id, stored once per item.

Behaviors reference items by id; every retrieval method turns item ids into table
rows with :meth:`ItemTable.rows` and reads the features it needs from there, so a
feature is never copied per behavior.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import scipy.sparse as sp

from gsu._format import load_container, write_container
from gsu._validate import StateCheck, as_ids, as_matrix
from gsu.index.filters import IdMap

__all__ = ["ItemTable"]

_KIND = "item_table"


class ItemTable:
    """Item features keyed by item id.

    Args:
        ids: (n,) int64 unique item ids; default ``0..n-1`` (then a lookup is free).
        embeddings: (n, d) float32 — the attention (CTR model) embeddings used by
            ``Exact``, ``TWIN``, ``SimHashTopK`` and ``SDIM``.
        retrieval_embeddings: (n, d_r) float32 — separate retrieval embeddings for
            ``SoftSearch`` (DARE: the retrieval space need not be the attention
            space; MUSE: e.g. multimodal/text embeddings). Defaults to ``embeddings``.
        category: (n,) int64 item category (``HardSearch``).
        sparse: scipy CSR (n, V) float32 sparse item vectors (``SparseSearch``).

    At least one feature must be given; all given features must have n rows.
    """

    def __init__(
        self,
        *,
        ids: Any = None,
        embeddings: Any = None,
        retrieval_embeddings: Any = None,
        category: Any = None,
        sparse: Any = None,
    ):
        n = None
        for name, v in (("embeddings", embeddings), ("retrieval_embeddings", retrieval_embeddings), ("category", category), ("sparse", sparse)):
            if v is not None:
                m = v.shape[0] if hasattr(v, "shape") else len(v)
                if n is None:
                    n = int(m)
                elif int(m) != n:
                    raise ValueError(f"{name}: has {m} rows but other features have {n} (one row per item expected)")
        if n is None:
            if ids is None:
                raise ValueError("ItemTable: give at least one feature (embeddings, retrieval_embeddings, category, sparse)")
            n = int(np.asarray(ids).shape[0])
        self.embeddings = None if embeddings is None else as_matrix(embeddings, name="embeddings", allow_empty=True)
        self.retrieval_embeddings = (
            None if retrieval_embeddings is None else as_matrix(retrieval_embeddings, name="retrieval_embeddings", allow_empty=True)
        )
        if category is None:
            self.category = None
        else:
            self.category = as_ids(category, name="category", n=n)
        if sparse is None:
            self.sparse = None
        else:
            if not sp.issparse(sparse):
                raise TypeError(f"sparse: expected a scipy sparse matrix, got {type(sparse).__name__}")
            s = sp.csr_matrix(sparse, dtype=np.float32)
            s.sort_indices()
            self.sparse = s
        self.ids = np.arange(n, dtype=np.int64) if ids is None else as_ids(ids, name="ids", n=n, unique=True)
        self.idmap = IdMap(self.ids)

    @property
    def n_items(self) -> int:
        return int(self.ids.shape[0])

    def __len__(self) -> int:
        return self.n_items

    @property
    def dim(self) -> int:
        """Dimension d of the attention embeddings."""
        return int(self.need("embeddings").shape[1])

    def need(self, name: str) -> Any:
        """The feature ``name``; ``ValueError`` when the table lacks it."""
        v = getattr(self, name)
        if name == "retrieval_embeddings" and v is None:
            v = self.embeddings
        if v is None:
            raise ValueError(f"the ItemTable has no {name}; build it with ItemTable({name}=...)")
        return v

    def rows(self, item_ids: Any, *, name: str = "item ids") -> np.ndarray:
        """Rows (m,) int64 of ``item_ids``; unknown ids raise ``ValueError`` naming them."""
        ids = as_ids(np.atleast_1d(np.asarray(item_ids)), name=name) if np.ndim(item_ids) <= 1 else None
        if ids is None:
            raise ValueError(f"{name}: expected a 1-D array of item ids, got shape {np.shape(item_ids)}")
        r = self.idmap.rows(ids)
        if ids.size and np.any(r < 0):
            bad = np.unique(ids[r < 0])
            raise ValueError(f"{name}: {bad.size} unknown item id(s), e.g. {bad[:5].tolist()} (not in the ItemTable of {self.n_items} items)")
        return r

    def embedding(self, item_ids: Any) -> np.ndarray:
        return self.need("embeddings")[self.rows(item_ids)]

    def retrieval_embedding(self, item_ids: Any) -> np.ndarray:
        return self.need("retrieval_embeddings")[self.rows(item_ids)]

    def categories(self, item_ids: Any) -> np.ndarray:
        return self.need("category")[self.rows(item_ids)]

    # -- persistence --------------------------------------------------------
    def save(self, path: str | os.PathLike) -> None:
        arrays: dict[str, np.ndarray] = {"ids": self.ids}
        if self.embeddings is not None:
            arrays["embeddings"] = self.embeddings
        if self.retrieval_embeddings is not None:
            arrays["retrieval_embeddings"] = self.retrieval_embeddings
        if self.category is not None:
            arrays["category"] = self.category
        if self.sparse is not None:
            arrays["sparse_indptr"] = self.sparse.indptr.astype(np.int64)
            arrays["sparse_indices"] = self.sparse.indices.astype(np.int32)
            arrays["sparse_data"] = self.sparse.data.astype(np.float32)
        cfg = {"n_items": self.n_items, "sparse_dim": None if self.sparse is None else int(self.sparse.shape[1])}
        write_container(path, _KIND, cfg, arrays)

    @classmethod
    def load(cls, path: str | os.PathLike, *, mmap: bool = False, verify: bool = True) -> "ItemTable":
        """Load a saved table (validated first: distinct ids other than -1, one row per
        item in every feature, a well-formed sparse CSR with components in range, finite
        embeddings when ``verify``)."""

        def build(kind: str, cfg: dict[str, Any], a: dict[str, np.ndarray]) -> "ItemTable":
            c = StateCheck(cfg, a, values=verify)
            ids = c.array("ids", np.int64, (None,))
            c.ids("ids", ids)
            n = ids.shape[0]
            if c.cfg_int("n_items", lo=0) != n:
                raise c.fail("config 'n_items'", f"{cfg['n_items']} does not match the {n} ids")
            t = cls.__new__(cls)
            t.ids = ids
            t.embeddings = t.retrieval_embeddings = t.category = t.sparse = None
            for name in ("embeddings", "retrieval_embeddings"):
                if name in a:
                    setattr(t, name, c.array(name, np.float32, (n, None)))
                    c.finite(name, getattr(t, name))
            if "category" in a:
                t.category = c.array("category", np.int64, (n,))
            if "sparse_data" in a:
                dim = c.cfg_int("sparse_dim", lo=1, hi=2**31 - 1)
                indptr = c.array("sparse_indptr", np.int64, (n + 1,))
                indices = c.array("sparse_indices", np.int32, (None,))
                data = c.array("sparse_data", np.float32, (indices.shape[0],))
                c.offsets("sparse_indptr", indptr, end=indices.shape[0])
                c.in_range("sparse_indices", indices, 0, dim)
                c.sorted_rows("sparse_indices", indptr, indices)
                c.finite("sparse_data", data)
                t.sparse = sp.csr_matrix((data, indices, indptr), shape=(n, dim))
            t.idmap = IdMap(ids)
            return t

        return load_container(path, build, mmap=mmap, verify=verify, kind=_KIND, what="item table")

    def __repr__(self) -> str:
        feats = [f for f in ("embeddings", "retrieval_embeddings", "category", "sparse") if getattr(self, f) is not None]
        return f"ItemTable(n_items={self.n_items}, features={feats})"
