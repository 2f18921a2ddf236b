"""Small LLVM intrinsics for numba kernels: explicit vector adds, half-precision and
unchecked loads, prefetches.

numba hands LLVM array loops whose operands *may* alias, so a short inner loop such as
``dst[t] += src[t]`` (t < 64) is vectorised behind a runtime overlap check and a
scalar fallback, whose setup costs more than the add itself when it runs millions of
times. :func:`add_f32x16` states the width and the independence of the operands
outright: one unaligned 16-lane load of each, one add, one store.
"""

from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

__all__ = ["LANES", "add_f32x16", "load_f32", "load_index", "prefetch"]

LANES = 16
"""Lanes of :func:`add_f32x16`."""


def _item_pointer(context, builder, aryty, ary_val, idx_val, idx_ty):
    ary = context.make_array(aryty)(context, builder, ary_val)
    i = context.cast(builder, idx_val, idx_ty, types.intp)
    return cgutils.get_item_pointer2(
        context, builder, data=ary.data, shape=cgutils.unpack_tuple(builder, ary.shape),
        strides=cgutils.unpack_tuple(builder, ary.strides), layout=aryty.layout, inds=[i],
        wraparound=False, boundscheck=False,
    )


def _f32_vec_args(dst, di, src, si) -> bool:
    ok = all(isinstance(a, types.Array) and a.ndim == 1 and a.layout == "C" and a.dtype == types.float32 for a in (dst, src))
    return ok and isinstance(di, types.Integer) and isinstance(si, types.Integer)


def _vec_ptr(builder, ptr):
    return builder.bitcast(ptr, ir.VectorType(ir.FloatType(), LANES).as_pointer())


@intrinsic
def add_f32x16(typingctx, dst, di, src, si):
    """``dst[di:di+16] += src[si:si+16]`` for 1-D C-contiguous float32 arrays, as one
    16-lane vector add (no bounds check: the caller keeps both ranges in bounds).
    Element-wise IEEE adds, so the result is bit-identical to the scalar loop."""
    if not _f32_vec_args(dst, di, src, si):
        return None
    sig = types.void(dst, di, src, si)

    def codegen(context, builder, signature, args):
        dty, dity, sty, sity = signature.args
        pd = _vec_ptr(builder, _item_pointer(context, builder, dty, args[0], args[1], dity))
        ps = _vec_ptr(builder, _item_pointer(context, builder, sty, args[2], args[3], sity))
        a = builder.load(pd, align=4)
        b = builder.load(ps, align=4)
        builder.store(builder.fadd(a, b), pd, align=4)
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def prefetch(typingctx, arr, idx):
    """Hint the CPU to fetch the cache line holding ``arr[idx]`` (``llvm.prefetch``, read, high locality)."""
    if not isinstance(arr, types.Array) or arr.ndim != 1 or not isinstance(idx, types.Integer):
        return None
    sig = types.void(arr, idx)

    def codegen(context, builder, signature, args):
        aryty, idxty = signature.args
        ptr = _item_pointer(context, builder, aryty, args[0], args[1], idxty)
        i8p = ir.IntType(8).as_pointer()
        i32 = ir.IntType(32)
        fnty = ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch.p0i8")
        builder.call(fn, [builder.bitcast(ptr, i8p), i32(0), i32(3), i32(1)])
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def load_f32(typingctx, arr, idx):
    """``arr[idx]`` as float32: float32 arrays load directly; uint16 arrays hold IEEE
    half-precision bits (numba has no float16 type), widened with one F16C instruction."""
    if not isinstance(arr, types.Array) or arr.ndim != 1 or arr.dtype not in (types.float32, types.uint16):
        return None
    if not isinstance(idx, types.Integer):
        return None
    sig = types.float32(arr, idx)

    def codegen(context, builder, signature, args):
        aryty, idxty = signature.args
        ptr = _item_pointer(context, builder, aryty, args[0], args[1], idxty)
        raw = builder.load(ptr)
        if aryty.dtype == types.uint16:
            return builder.fpext(builder.bitcast(raw, ir.HalfType()), ir.FloatType())
        return raw

    return sig, codegen


@intrinsic
def load_index(typingctx, arr, idx):
    """``arr[idx]`` of an integer array, widened to an unsigned machine integer, loaded
    without the negative-index wraparound that numba adds for signed ``idx`` (callers
    guarantee ``0 <= idx < len(arr)`` and non-negative entries): an index used this way
    needs no wraparound either."""
    if not isinstance(arr, types.Array) or arr.ndim != 1 or not isinstance(arr.dtype, types.Integer):
        return None
    if not isinstance(idx, types.Integer):
        return None
    sig = types.uintp(arr, idx)

    def codegen(context, builder, signature, args):
        aryty, idxty = signature.args
        ptr = _item_pointer(context, builder, aryty, args[0], args[1], idxty)
        raw = builder.load(ptr)
        out = ir.IntType(64)
        if raw.type.width >= 64:
            return raw
        return builder.zext(raw, out) if not aryty.dtype.signed else builder.sext(raw, out)

    return sig, codegen
