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

__all__ = ["DOT_GROUPS", "LANES", "add_f32x16", "dot_i8_groups", "load_f32", "load_index", "prefetch"]

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


DOT_GROUPS = 4
"""Groups of :data:`LANES` rows that one :func:`dot_i8_groups` call scores."""


@intrinsic
def dot_i8_groups(typingctx, q, codes, base, d, out):
    """Dot products of the float32 vector ``q[:d]`` with ``DOT_GROUPS · LANES`` rows of
    8-bit codes held column-major in groups of :data:`LANES` rows: row ``j`` of group
    ``g``, column ``t``, is ``codes[base + (g·d + t)·LANES + j]``. Writes them to
    ``out[:DOT_GROUPS · LANES]``, group by group.

    Each lane sums its row's products in column order, ``acc = fmuladd(q[t], c[t], acc)``
    (fused where the CPU has FMA), with no horizontal reduction at all: a query against
    hundreds of rows of a few hundred columns costs one broadcast, four widening loads and
    four vector multiply-adds per column (the row-major loop spent a reduction per row and
    was bound by the int8-to-float conversions). The same machine code runs for a query
    alone and in a batch, so both give the same scores bit for bit. No bounds checks:
    the caller keeps ``base + DOT_GROUPS·d·LANES <= len(codes)``, ``d <= len(q)`` and
    ``DOT_GROUPS·LANES <= len(out)``."""
    ok = (isinstance(q, types.Array) and q.ndim == 1 and q.layout == "C" and q.dtype == types.float32
          and isinstance(codes, types.Array) and codes.ndim == 1 and codes.layout == "C" and codes.dtype == types.int8
          and isinstance(out, types.Array) and out.ndim == 1 and out.layout == "C" and out.dtype == types.float32
          and isinstance(base, types.Integer) and isinstance(d, types.Integer))
    if not ok:
        return None
    sig = types.void(q, codes, base, d, out)

    def codegen(context, builder, signature, args):
        qty, cty, bty, dty, oty = signature.args
        i64 = ir.IntType(64)
        vf = ir.VectorType(ir.FloatType(), LANES)
        vb = ir.VectorType(ir.IntType(8), LANES)
        zero = context.get_constant(types.intp, 0)
        pq = _item_pointer(context, builder, qty, args[0], zero, types.intp)
        pc = _item_pointer(context, builder, cty, args[1], args[2], bty)
        po = _item_pointer(context, builder, oty, args[4], zero, types.intp)
        n = context.cast(builder, args[3], dty, types.intp)
        fma = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vf, [vf, vf, vf]), "llvm.fmuladd.v16f32")
        accs = [cgutils.alloca_once_value(builder, ir.Constant(vf, [0.0] * LANES)) for _ in range(DOT_GROUPS)]
        stride = builder.mul(n, ir.Constant(i64, LANES))
        splat_mask = ir.Constant(ir.VectorType(ir.IntType(32), LANES), [0] * LANES)
        with cgutils.for_range(builder, n) as loop:
            t = loop.index
            qt = builder.load(builder.gep(pq, [t]), align=4)
            qv = builder.insert_element(ir.Constant(vf, ir.Undefined), qt, ir.Constant(ir.IntType(32), 0))
            qv = builder.shuffle_vector(qv, ir.Constant(vf, ir.Undefined), splat_mask)
            off = builder.mul(t, ir.Constant(i64, LANES))
            for g in range(DOT_GROUPS):
                cv = builder.load(builder.bitcast(builder.gep(pc, [off]), vb.as_pointer()), align=1)
                builder.store(builder.call(fma, [qv, builder.sitofp(cv, vf), builder.load(accs[g])]), accs[g])
                off = builder.add(off, stride)
        for g in range(DOT_GROUPS):
            dst = builder.bitcast(builder.gep(po, [ir.Constant(i64, LANES * g)]), vf.as_pointer())
            builder.store(builder.load(accs[g]), dst, align=4)
        return context.get_dummy_value()

    return sig, codegen
