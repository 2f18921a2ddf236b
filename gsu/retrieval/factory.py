"""Build a retrieval method by name (used by the CLI and the benchmark)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from gsu.retrieval.items import ItemTable

__all__ = ["make_method", "METHOD_NAMES"]

#: names accepted by :func:`make_method` (plus ``"hybrid:<a>+<b>[+...]"``)
METHOD_NAMES = ("exact", "hard", "soft", "simhash", "sdim", "sparse", "twin", "clustered", "cascade", "multi_interest")


def _load_arrays(params: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for key, v in params.items():
        if isinstance(v, str) and v.endswith(".npy"):
            p = Path(v)
            if not p.exists():
                raise FileNotFoundError(f"{key}: {p}: no such file")
            v = np.load(p)
        out[key] = v
    return out


def make_method(name: str, items: ItemTable, *, k: int = 100, index: Any = None, **params: Any) -> Any:
    """A method by name: ``exact``, ``hard``, ``soft``, ``simhash``, ``sdim``, ``sparse``,
    ``twin``, ``clustered``, ``cascade``, ``multi_interest``, or ``hybrid:<a>+<b>...``
    (components by name).

    ``params`` go to the constructor (a string ending in ``.npy`` is loaded as an array,
    e.g. ``query_proj=wq.npy`` for ``twin``). For a hybrid, a key ``"<component>.<param>"``
    goes to that component, the others (``mode``, ``quotas``, ``weights``) to ``Hybrid``.
    ``index`` (a gsu index) is handed to ``soft`` / ``sparse``. Unknown names or
    parameters raise ``ValueError`` / ``TypeError``.
    """
    from gsu.retrieval import methods as m

    params = _load_arrays(dict(params))
    if not isinstance(name, str):
        raise TypeError(f"method: expected a name, got {type(name).__name__}")
    if name.startswith("hybrid:"):
        comps = [c for c in name[len("hybrid:") :].split("+") if c]
        if len(comps) < 2:
            raise ValueError(f"method {name!r}: a hybrid needs at least two components, e.g. 'hybrid:hard+soft'")
        own = {key: v for key, v in params.items() if "." not in key}
        subs = []
        for c in comps:
            sp = {key.split(".", 1)[1]: v for key, v in params.items() if key.startswith(c + ".")}
            subs.append(make_method(c, items, k=k, index=index if c in ("soft", "sparse") else None, **sp))
        return m.Hybrid(subs, k=k, **own)
    if name == "exact":
        return m.Exact(items, k=k, **params)
    if name == "hard":
        return m.HardSearch(items, k=k, **params)
    if name == "soft":
        return m.SoftSearch(items, k=k, index=index, **params)
    if name == "twin":
        return m.TWIN(items, k=k, **params)
    if name == "simhash":
        from gsu.retrieval.lsh import SimHashTopK

        return SimHashTopK(items, k=k, **params)
    if name == "sdim":
        from gsu.retrieval.lsh import SDIM

        return SDIM(items, **params)
    if name == "sparse":
        from gsu.retrieval.sparse import SparseSearch

        return SparseSearch(items, k=k, index=index, **params)
    if name == "clustered":
        from gsu.retrieval.clustered import Clustered

        return Clustered(items, k=k, **params)
    if name == "cascade":
        from gsu.retrieval.cascade import Cascade

        return Cascade(items, k=k, **params)
    if name == "multi_interest":
        from gsu.retrieval.interests import MultiInterest

        return MultiInterest(items, k=k, **params)
    raise ValueError(f"method: unknown name {name!r}; expected one of {METHOD_NAMES} or 'hybrid:<a>+<b>'")
