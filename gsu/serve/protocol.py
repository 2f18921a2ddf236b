"""Wire formats shared by the server and :mod:`gsu.client`.

Bodies are JSON (``application/json``), one or more ``.npy`` arrays back to back
(``application/x-npy``; never pickled objects), or raw little-endian float32 query rows
(``application/octet-stream``). JSON cannot hold ``-inf``: padded scores are ``null``.
"""

from __future__ import annotations

import io
import json
import re
import struct
from typing import Any

import numpy as np

__all__ = ["JSON", "NPY", "RAW", "encode_npy", "decode_npy", "json_matrix", "media_type"]

JSON = "application/json"
NPY = "application/x-npy"
RAW = "application/octet-stream"

_MAX_NPY_ARRAYS = 8


def media_type(header: str | None) -> str:
    """``"application/json; charset=utf-8"`` -> ``"application/json"`` (lower case)."""
    return (header or "").split(";", 1)[0].strip().lower()


def encode_npy(*arrays: np.ndarray) -> bytes:
    """Arrays as ``.npy`` records back to back."""
    buf = io.BytesIO()
    for a in arrays:
        np.lib.format.write_array(buf, np.ascontiguousarray(a), allow_pickle=False)
    return buf.getvalue()


# the header numpy writes for a plain array: {'descr': '<f4', 'fortran_order': False, 'shape': (2, 64), }
_HEADER = re.compile(rb"\{'descr': '([<>|][a-z][0-9]+)', 'fortran_order': (True|False), 'shape': \(([0-9, ]*)\), \}\s*")
_MAGIC = b"\x93NUMPY"


def _fast_header(body: bytes, pos: int) -> tuple[tuple[int, ...], bool, np.dtype, int] | None:
    """``(shape, fortran, dtype, data offset)`` of the version-1.0 record at ``pos`` when
    its header is numpy's usual one (one regular expression instead of ``ast``), else None."""
    if body[pos : pos + 8] != _MAGIC + b"\x01\x00" or len(body) < pos + 10:
        return None
    (hlen,) = struct.unpack_from("<H", body, pos + 8)
    m = _HEADER.fullmatch(body, pos + 10, pos + 10 + hlen)
    if m is None:
        return None
    try:
        shape = tuple(int(v) for v in m.group(3).split(b",") if v.strip())
        dtype = np.dtype(m.group(1).decode())
    except (ValueError, TypeError):
        return None
    return shape, m.group(2) == b"True", dtype, pos + 10 + hlen


def decode_npy(body: bytes, *, max_arrays: int = _MAX_NPY_ARRAYS) -> list[np.ndarray]:
    """Parse ``.npy`` records back to back (numeric dtypes only; no pickles).

    Raises ``ValueError`` with a one-line reason on anything malformed."""
    out: list[np.ndarray] = []
    view = memoryview(body)
    f = io.BytesIO(body)
    n = len(body)
    while f.tell() < n:
        if len(out) >= max_arrays:
            raise ValueError(f"npy body: more than {max_arrays} arrays")
        fast = _fast_header(body, f.tell())
        if fast is not None:
            shape, fortran, dtype, start = fast
            if dtype.kind not in "biuf":
                raise ValueError(f"npy body: array {len(out)} has dtype {dtype}; expected a numeric dtype")
            f.seek(start)
            out.append(_take(view, f, shape, fortran, dtype, len(out)))
            continue
        try:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
            elif version in ((2, 0), (3, 0)):
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
            else:
                raise ValueError(f"unsupported npy version {version}")
        except ValueError as e:
            raise ValueError(f"npy body: array {len(out)} is not a valid .npy record ({str(e).splitlines()[0]})") from None
        if dtype.hasobject or dtype.kind not in "biuf":
            raise ValueError(f"npy body: array {len(out)} has dtype {dtype}; expected a numeric dtype")
        out.append(_take(view, f, tuple(shape), fortran, dtype, len(out)))
    if not out:
        raise ValueError("npy body: empty")
    return out


def _take(view: memoryview, f: io.BytesIO, shape: tuple[int, ...], fortran: bool, dtype: np.dtype, i: int) -> np.ndarray:
    """The array whose data starts at ``f``'s position (a view of the body); advances ``f``."""
    count = 1
    for v in shape:
        count *= v
    start = f.tell()
    nbytes = count * dtype.itemsize
    if start + nbytes > len(view):
        raise ValueError(f"npy body: array {i} of shape {shape} runs past the end of the body")
    arr = np.frombuffer(view[start : start + nbytes], dtype=dtype, count=count)
    arr = arr.reshape(shape[::-1]).T if fortran else arr.reshape(shape)
    f.seek(start + nbytes)
    return arr


def json_matrix(a: np.ndarray) -> list[Any]:
    """A float matrix as nested lists, ``-inf``/``nan`` as ``None`` (JSON has neither)."""
    if a.dtype.kind == "f" and a.size and not np.isfinite(a).all():
        obj = a.astype(object)
        obj[~np.isfinite(a)] = None
        return obj.tolist()
    return a.tolist()


def dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), allow_nan=False).encode()
