"""The one registry of retrieval methods: a name -> the class that implements it.

The CLI (``gsu retrieve --method``), the server's ``[stores.*.methods]``, the CTR layer
and the benchmarks all build methods through :func:`make_method`, so a method is added
in one place. A new method is one :class:`~gsu.retrieval.Retriever` subclass (it
implements ``_retrieve``) and one line::

    register_method("mine", MyRetriever)                # or "package.module:MyRetriever"

after which ``make_method("mine", items, k=50, **settings)`` builds it and every layer
above can name it. Built-in methods are registered by dotted path, so looking one up
imports only its own module.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gsu.retrieval.items import ItemTable

__all__ = ["MethodSpec", "register_method", "method_names", "method_class", "make_method"]


@dataclass(frozen=True)
class MethodSpec:
    """One registered method.

    ``target``: the class, or ``"module:Class"`` imported on first use; ``takes_k``:
    the constructor accepts ``k=`` (SDIM's bucket aggregation has no k);
    ``takes_index``: the constructor accepts a gsu ``index=`` to search items with.
    """

    name: str
    target: Any
    takes_k: bool = True
    takes_index: bool = False

    def cls(self) -> type:
        if isinstance(self.target, str):
            mod, _, attr = self.target.partition(":")
            return getattr(importlib.import_module(mod), attr)
        return self.target


_REGISTRY: dict[str, MethodSpec] = {}


def register_method(name: str, target: Any, *, takes_k: bool = True, takes_index: bool = False,
                    replace: bool = False) -> MethodSpec:
    """Register ``target`` (a :class:`~gsu.retrieval.Retriever` subclass or ``"module:Class"``)
    under ``name``. A name already taken raises ``ValueError`` unless ``replace=True``."""
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"method name: expected an identifier such as 'my_method', got {name!r}")
    if name in _REGISTRY and not replace:
        raise ValueError(f"method {name!r} is already registered ({_REGISTRY[name].target}); pass replace=True to override")
    if not isinstance(target, str):
        from gsu.retrieval.methods import Retriever

        if not (isinstance(target, type) and issubclass(target, Retriever)):
            raise TypeError(f"method {name!r}: expected a gsu.retrieval.Retriever subclass, got {target!r}")
    elif ":" not in target:
        raise ValueError(f"method {name!r}: a dotted target reads 'package.module:Class', got {target!r}")
    spec = MethodSpec(name, target, takes_k=takes_k, takes_index=takes_index)
    _REGISTRY[name] = spec
    return spec


def method_names() -> tuple[str, ...]:
    """Every registered name, in registration order (plus ``"hybrid:<a>+<b>"`` in :func:`make_method`)."""
    return tuple(_REGISTRY)


def method_class(name: str) -> type:
    """The class registered under ``name``."""
    spec = _REGISTRY.get(name) if isinstance(name, str) else None
    if spec is None:
        raise ValueError(f"method: unknown name {name!r}; expected one of {method_names()} or 'hybrid:<a>+<b>'")
    return spec.cls()


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
    """A registered method by name, or ``hybrid:<a>+<b>...`` (components by name).

    ``params`` go to the constructor (a string ending in ``.npy`` is loaded as an array,
    e.g. ``query_proj=wq.npy`` for ``twin``). For a hybrid, a key ``"<component>.<param>"``
    goes to that component, the others (``mode``, ``quotas``, ``weights``) to ``Hybrid``.
    ``index`` (a gsu index) is handed to the methods registered with ``takes_index``.
    Unknown names or parameters raise ``ValueError`` / ``TypeError``.
    """
    if not isinstance(name, str):
        raise TypeError(f"method: expected a name, got {type(name).__name__}")
    params = _load_arrays(dict(params))
    if name.startswith("hybrid:"):
        from gsu.retrieval.methods import Hybrid

        comps = [c for c in name[len("hybrid:") :].split("+") if c]
        if len(comps) < 2:
            raise ValueError(f"method {name!r}: a hybrid needs at least two components, e.g. 'hybrid:hard+soft'")
        own = {key: v for key, v in params.items() if "." not in key}
        subs = []
        for c in comps:
            sp = {key.split(".", 1)[1]: v for key, v in params.items() if key.startswith(c + ".")}
            subs.append(make_method(c, items, k=k, index=index, **sp))
        return Hybrid(subs, k=k, **own)
    cls = method_class(name)
    spec = _REGISTRY[name]
    if spec.takes_k:
        params["k"] = k
    if spec.takes_index:
        params["index"] = index
    try:
        return cls(items, **params)
    except TypeError as e:
        if "required" in str(e) and "argument" in str(e):  # a setting the method cannot default
            raise TypeError(f"method {name!r}: {e} (give each as a setting, e.g. `--param name=value` on the "
                            "command line; an array as a .npy file)") from e
        raise


# Built-in methods. One line each: a new method is a Retriever subclass and a line here
# (or a register_method call in the user's own code).
register_method("exact", "gsu.retrieval.methods:Exact")
register_method("hard", "gsu.retrieval.methods:HardSearch")
register_method("soft", "gsu.retrieval.methods:SoftSearch", takes_index=True)
register_method("twin", "gsu.retrieval.methods:TWIN")
register_method("simhash", "gsu.retrieval.lsh:SimHashTopK")
register_method("sdim", "gsu.retrieval.lsh:SDIM", takes_k=False)
register_method("sparse", "gsu.retrieval.sparse:SparseSearch", takes_index=True)
register_method("clustered", "gsu.retrieval.clustered:Clustered")
register_method("cascade", "gsu.retrieval.cascade:Cascade")
register_method("multi_interest", "gsu.retrieval.interests:MultiInterest")
