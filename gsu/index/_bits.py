"""Bit-level LLVM intrinsics for the compact Seismic summaries (numba).

- :func:`popcount64` — ``llvm.ctpop.i64``: set bits of a uint64;
- :func:`ctz64` — ``llvm.cttz.i64``: trailing zero bits of a uint64 (64 for 0);
- :func:`load_u32` / :func:`load_u64` — little-endian loads of 4 / 8 bytes starting at
  any byte of a 1-D C-contiguous uint8 array (unaligned, no bounds check: the caller
  pads the array so that the bytes exist).

All four compile to single instructions on x86-64 (``popcnt``, ``tzcnt``, ``mov``).
"""

from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

__all__ = ["ctz64", "load_u32", "load_u64", "popcount64"]


def _u64_unary(name: str, extra_false: bool):
    @intrinsic
    def fn(typingctx, x):
        if not isinstance(x, types.Integer):
            return None
        sig = types.uint64(x)

        def codegen(context, builder, signature, args):
            v = context.cast(builder, args[0], signature.args[0], types.uint64)
            i64 = ir.IntType(64)
            if extra_false:
                fnty = ir.FunctionType(i64, [i64, ir.IntType(1)])
                f = cgutils.get_or_insert_function(builder.module, fnty, name)
                return builder.call(f, [v, ir.Constant(ir.IntType(1), 0)])
            fnty = ir.FunctionType(i64, [i64])
            f = cgutils.get_or_insert_function(builder.module, fnty, name)
            return builder.call(f, [v])

        return sig, codegen

    return fn


popcount64 = _u64_unary("llvm.ctpop.i64", False)
popcount64.__doc__ = "Number of set bits of an integer taken as uint64."
ctz64 = _u64_unary("llvm.cttz.i64", True)
ctz64.__doc__ = "Trailing zero bits of an integer taken as uint64 (64 when it is 0)."


def _load_uint(bits: int):
    ret = types.uint32 if bits == 32 else types.uint64

    @intrinsic
    def fn(typingctx, arr, idx):
        if not (isinstance(arr, types.Array) and arr.ndim == 1 and arr.layout == "C" and arr.dtype == types.uint8):
            return None
        if not isinstance(idx, types.Integer):
            return None
        sig = ret(arr, idx)

        def codegen(context, builder, signature, args):
            aryty, idxty = signature.args
            ary = context.make_array(aryty)(context, builder, args[0])
            i = context.cast(builder, args[1], idxty, types.intp)
            ptr = builder.gep(ary.data, [i])
            p = builder.bitcast(ptr, ir.IntType(bits).as_pointer())
            return builder.load(p, align=1)

        return sig, codegen

    return fn


load_u32 = _load_uint(32)
load_u32.__doc__ = "Little-endian uint32 from 4 bytes at ``arr[idx:idx+4]`` of a uint8 array (unaligned, unchecked)."
load_u64 = _load_uint(64)
load_u64.__doc__ = "Little-endian uint64 from 8 bytes at ``arr[idx:idx+8]`` of a uint8 array (unaligned, unchecked)."
