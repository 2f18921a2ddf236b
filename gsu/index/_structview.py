"""A numba ``StructRef`` read as one tuple of its fields, its arrays borrowed: :func:`borrowed_fields`.

The index views that a kernel takes as one argument (``_seismic_kernels.IndexView``,
``_request.RequestView``) read every field on every call. Through the struct's attributes
each array read takes a reference, an atomic increment and decrement per field and per call;
read from the struct's payload with a null meminfo, the reference counting of those arrays
is a null check.
"""

from __future__ import annotations

from typing import Any, Sequence

import numba as nb
from numba.core import cgutils
from numba.core import types as _nbt
from numba.core.extending import intrinsic
from numba.experimental import structref

__all__ = ["borrowed_fields"]


def borrowed_fields(struct_type: type, fields: Sequence[str]) -> Any:
    """A compiled function ``f(v)`` for a ``StructRef`` ``v`` of the numba type class
    ``struct_type``: the fields ``fields``, in order, as a tuple — arrays borrowed (read from
    the payload without taking a reference), other fields by value. What it returns is valid
    while ``v`` is: only inside the call that holds ``v``, after anything in that call that
    replaces a field, and never stored. Where numba lacks structref's payload helper, ordinary
    (counted) attribute reads."""
    names = tuple(fields)
    if hasattr(getattr(structref, "_Utils", None), "get_data_struct"):

        @intrinsic
        def read(typingctx, v):
            if not isinstance(v, struct_type):
                return None
            ftypes = [v.field_dict[name] for name in names]
            tup = _nbt.Tuple(ftypes)

            def codegen(context, builder, sig, args):
                data = structref._Utils(context, builder, sig.args[0]).get_data_struct(args[0])
                vals = []
                for name, t in zip(names, ftypes):
                    if isinstance(t, _nbt.Array):
                        arr = context.make_array(t)(context, builder, value=getattr(data, name))
                        arr.meminfo = cgutils.get_null_value(arr.meminfo.type)
                        arr.parent = cgutils.get_null_value(arr.parent.type)
                        vals.append(arr._getvalue())
                    else:
                        vals.append(getattr(data, name))
                return context.make_tuple(builder, tup, vals)

            return tup(v), codegen

        return read
    # pragma: no cover - numba without structref's payload helper
    ns: dict[str, Any] = {}
    exec("def read(v):\n    return (" + "".join(f"v.{name}, " for name in names) + ")\n", ns)  # noqa: S102
    return nb.njit(inline="always")(ns["read"])
