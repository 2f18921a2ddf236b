"""numba compile options shared by the kernels."""

from __future__ import annotations

__all__ = ["LEAF"]


def _leaf_options() -> dict:
    try:
        from numba.core.cpu import CPUTargetOptions
    except ImportError:  # pragma: no cover - numba moved its target options
        return {}
    return {"_nrt": False} if hasattr(CPUTargetOptions, "_nrt") else {}


#: ``njit`` options of a *leaf* helper: one that allocates nothing and keeps no reference
#: to an array it is given (it reads and writes through them while its caller holds them).
#: numba compiles it without reference counting (its ``_nrt=False``). An array argument
#: of an inlined helper, like one of a called function, is otherwise an atomic increment
#: at the helper's entry and a decrement at its exit, which numba's pruning leaves in place
#: inside a kernel's loops: a one-query Seismic search of the docstrings set scoring 325
#: documents made 932 increments and 974 decrements with its helpers inlined, 67 and 76
#: with them as leaves (counted with breakpoints; each costs ~5 ns here). Empty where
#: numba lacks the option: the helpers are then ordinary compiled functions, with the
#: same results.
LEAF = _leaf_options()
