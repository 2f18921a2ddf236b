"""Wire formats shared by the server and :mod:`gsu.client`.

Bodies are JSON (``application/json``), one or more ``.npy`` arrays back to back
(``application/x-npy``; never pickled objects), or raw little-endian float32 query rows
(``application/octet-stream``). JSON cannot hold ``-inf``: padded scores are ``null``.
"""

from __future__ import annotations

import io
import json
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
        count = int(np.prod(shape, dtype=np.int64))
        start = f.tell()
        nbytes = count * dtype.itemsize
        if start + nbytes > n:
            raise ValueError(f"npy body: array {len(out)} of shape {tuple(shape)} runs past the end of the body")
        arr = np.frombuffer(view[start : start + nbytes], dtype=dtype, count=count)
        arr = arr.reshape(shape[::-1]).T if fortran else arr.reshape(shape)
        out.append(arr)
        f.seek(start + nbytes)
    if not out:
        raise ValueError("npy body: empty")
    return out


def json_matrix(a: np.ndarray) -> list[Any]:
    """A float matrix as nested lists, ``-inf``/``nan`` as ``None`` (JSON has neither)."""
    if a.dtype.kind == "f" and a.size and not np.isfinite(a).all():
        obj = a.astype(object)
        obj[~np.isfinite(a)] = None
        return obj.tolist()
    return a.tolist()


def dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), allow_nan=False).encode()
