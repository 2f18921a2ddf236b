"""Direct calls of a compiled numba kernel, without the dispatcher's per-call typing.

A numba dispatcher resolves the types of its arguments on every call; for an argument
numba's C fast path does not know (a ``StructRef`` proxy such as the Seismic index view)
that costs ~0.5 µs, as much as a cheap query's search. :func:`direct_entry` resolves the
compiled specialisation once, for the numba types of example arguments, and returns its
entry point (the compiled function's own Python wrapper, which only unboxes).

The entry point does not check its arguments' types: an array of another dtype, rank or
layout would be read as if it had the compiled one (an array of higher rank would even
overwrite the unboxing's stack). Callers therefore check, per call, that every array
argument has the dtype and rank of the example and, where the example is C-contiguous,
that it is C-contiguous, aligned and writeable (:func:`plain`), and pass scalars of the
example's kinds; anything else goes through the dispatcher. An argument whose example is
a strided view (numba layout ``"A"``) is read through its strides, so any 1-D array of
the right dtype may be passed there, read-only ones included as long as the kernel only
reads it.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

__all__ = ["direct_entry", "plain"]


def direct_entry(dispatcher: Any, example_args: tuple) -> Callable[..., Any]:
    """The compiled entry point of ``dispatcher`` for the numba types of
    ``example_args`` (compiled, or loaded from numba's cache, if not yet there); the
    dispatcher itself when that cannot be resolved (a numba without these internals)."""
    try:
        import numba

        sig = tuple(numba.typeof(a) for a in example_args)
        cres = dispatcher.overloads.get(sig)
        if cres is None:
            dispatcher.compile(sig)
            cres = dispatcher.overloads.get(sig)
        ep = getattr(cres, "entry_point", None)
        return ep if callable(ep) else dispatcher
    except Exception:  # pragma: no cover - numba internals changed: the dispatcher is always correct
        return dispatcher


def plain(a: np.ndarray, ndim: int) -> bool:
    """Whether ``a`` has ``ndim`` dimensions and is C-contiguous, aligned and writeable (the
    layout an entry point compiled for plain arrays of that rank reads; the dtype is the
    caller's check)."""
    if a.ndim != ndim:
        return False
    f = a.flags
    return f.c_contiguous and f.aligned and f.writeable
