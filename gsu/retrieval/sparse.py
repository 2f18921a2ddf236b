"""``SparseSearch``: top-k behaviors by the inner product of sparse item vectors
(learned sparse text vectors, weighted tags/attributes)."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import scipy.sparse as sp

from gsu._validate import check_positive_int
from gsu.retrieval import _kernels as K_
from gsu.retrieval.items import ItemTable
from gsu.retrieval.methods import ItemSearch

log = logging.getLogger(__name__)

__all__ = ["SparseSearch"]


class SparseSearch(ItemSearch):
    """Top-k behaviors by sparse inner product ⟨x_target, x_behavior⟩.

    An :class:`~gsu.retrieval.methods.ItemSearch` like :class:`~gsu.retrieval.SoftSearch`:
    the search runs over the user's distinct items and each retrieved item expands to its
    visible positions, most recent first. Only behaviors with a *positive* score are
    retrievable (an item sharing no component with the target is never returned — the
    convention of :class:`gsu.index.SeismicIndex`), so a row may hold fewer than k entries.

    - History shorter than ``exact_below``, or no ``index``: exact sparse product of the
      targets with the user's distinct items (scipy), blocked over targets.
    - Otherwise ``index.search(x_targets, k, filter=<the user's visible item set>,
      **search_params)`` — typically a :class:`gsu.index.SeismicIndex` built on
      ``items.sparse`` with the item ids as ids (``SparseFlatIndex`` is its exact twin).

    Args:
        items: ItemTable with ``sparse`` (n, V) CSR, non-negative weights for Seismic.
        k: behaviors per target.
        index: a sparse gsu index over the catalog (ids = item ids), or None.
        exact_below: history length below which the exact product is used even with an index.
        search_params: keyword arguments of ``index.search`` (Seismic: ``query_cut``,
            ``heap_factor``, ``settings``).
        block_rows: targets per block of the exact product (bounds the dense score tile).
    """

    name = "sparse"

    def __init__(
        self,
        items: ItemTable,
        *,
        k: int = 100,
        index: Any = None,
        exact_below: int = 20_000,
        search_params: dict[str, Any] | None = None,
        block_rows: int = 128,
    ):
        super().__init__(items, k=k)
        X = self._keys = items.need("sparse")
        self._init_search(X.shape[1], index, exact_below, search_params, "sparse vectors")
        self.block_rows = check_positive_int(block_rows, name="block_rows")

    def _exact_topk(self, Q: sp.csr_matrix, uniq: np.ndarray, first_pos: np.ndarray, cuts: np.ndarray, k: int
                    ) -> tuple[np.ndarray, np.ndarray]:
        T = Q.shape[0]
        DT = sp.csc_matrix(self._keys[uniq].T)
        top_g = np.full((T, k), -1, np.int64)
        top_s = np.full((T, k), -np.inf, np.float32)
        for s in range(0, T, self.block_rows):
            e = min(T, s + self.block_rows)
            S = np.asarray((Q[s:e] @ DT).todense(), dtype=np.float32)
            S[S <= 0] = -np.inf  # only positive scores are retrievable
            B = e - s
            hs = np.empty((B, k), np.float32)
            hr = np.empty((B, k), np.int64)
            sizes = np.zeros(B, np.int64)
            K_.heap_scan_groups(S, 0, first_pos, cuts[s:e], k, hs, hr, sizes)
            # -inf entries entered the heap only while it was not full: drop them
            K_.heaps_finish(hs, hr, sizes, top_g[s:e], top_s[s:e])
        top_g[np.isneginf(top_s)] = -1  # entries are best first, -inf (and so -1) last
        return top_g, top_s
