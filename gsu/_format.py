"""The gsu container format: one file holding a kind, a JSON config and named arrays.

Every persistent gsu object (indexes, behavior stores, BSE tables) is written with
:func:`write_container` and read with :func:`read_container`.

Layout (all integers little-endian)::

    magic        8 bytes  b"GSUFILE\\x00"
    version      uint32   FORMAT_VERSION
    reserved     uint32   0
    header_len   uint64   length of the JSON header in bytes
    header       JSON     {"kind", "config", "gsu_version", "arrays": [{name, dtype, shape, offset, nbytes}]}
    padding      to a 64-byte boundary
    payload      each array C-contiguous, 64-byte aligned (offsets relative to the payload start)
    checksum     32 bytes SHA-256 over every byte before it

Writes are atomic: the file is written to a temporary name in the same folder,
flushed and fsync'ed, then renamed over the target. A truncated file, a changed byte,
a wrong magic or an unknown version raises :class:`gsu.errors.IndexFileError`
naming the file. ``mmap=True`` maps the payload read-only instead of reading it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import struct
import tempfile
from pathlib import Path
from typing import Any, BinaryIO, Iterator

import numpy as np

from gsu.errors import IndexFileError

MAGIC = b"GSUFILE\x00"
FORMAT_VERSION = 1
_PREFIX = struct.Struct("<8sIIQ")
_ALIGN = 64
_CHECKSUM_LEN = 32


def _pad(n: int) -> int:
    return (-n) % _ALIGN


def write_container(path: str | os.PathLike, kind: str, config: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
    """Write ``arrays`` and ``config`` (JSON-serialisable) under ``kind`` to ``path`` atomically."""
    from gsu import __version__

    path = Path(path)
    metas = []
    offset = 0
    prepared: list[np.ndarray] = []
    for name, arr in arrays.items():
        a = np.ascontiguousarray(arr)
        if a.dtype == object:
            raise TypeError(f"array {name!r}: object arrays cannot be saved")
        offset += _pad(offset)
        metas.append({"name": name, "dtype": a.dtype.str, "shape": list(a.shape), "offset": offset, "nbytes": int(a.nbytes)})
        prepared.append(a)
        offset += a.nbytes
    payload_len = offset
    header = json.dumps(
        {"kind": kind, "config": config, "gsu_version": __version__, "arrays": metas, "payload_len": payload_len},
        sort_keys=True,
    ).encode()
    prefix = _PREFIX.pack(MAGIC, FORMAT_VERSION, 0, len(header))
    head = prefix + header
    head += b"\x00" * _pad(len(head))

    with atomic_file(path) as f:
        h = hashlib.sha256()
        f.write(head)
        h.update(head)
        pos = 0
        for meta, a in zip(metas, prepared):
            gap = meta["offset"] - pos
            if gap:
                z = b"\x00" * gap
                f.write(z)
                h.update(z)
            buf = memoryview(a.reshape(-1).view(np.uint8)) if a.size else b""
            f.write(buf)
            h.update(buf)
            pos = meta["offset"] + meta["nbytes"]
        f.write(h.digest())


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """Open a temporary file beside ``path`` for writing; on success flush, fsync and
    rename it over ``path``; on any error remove it and leave ``path`` untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def read_header(path: str | os.PathLike) -> tuple[dict[str, Any], int]:
    """Return the parsed JSON header of a container and the payload's byte offset."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such file") from None
    with open(path, "rb") as f:
        raw = f.read(_PREFIX.size)
        if len(raw) < _PREFIX.size:
            raise IndexFileError(f"{path}: file is truncated ({size} bytes): not a gsu file")
        magic, version, _, header_len = _PREFIX.unpack(raw)
        if magic != MAGIC:
            raise IndexFileError(f"{path}: not a gsu file (bad magic bytes {magic!r})")
        if version != FORMAT_VERSION:
            raise IndexFileError(f"{path}: format version {version} is not supported (this gsu reads {FORMAT_VERSION})")
        if _PREFIX.size + header_len > size:
            raise IndexFileError(f"{path}: file is truncated (header runs past the end)")
        hb = f.read(header_len)
    try:
        header = json.loads(hb)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise IndexFileError(f"{path}: header is corrupted ({e})") from None
    start = _PREFIX.size + header_len
    start += _pad(start)
    expected = start + int(header.get("payload_len", -1)) + _CHECKSUM_LEN
    if size != expected:
        raise IndexFileError(f"{path}: file size {size} bytes does not match its header ({expected} bytes): truncated or altered")
    return header, start


def read_container(
    path: str | os.PathLike, *, mmap: bool = False, verify: bool = True, kind: str | None = None
) -> tuple[str, dict[str, Any], dict[str, np.ndarray]]:
    """Read a container: returns ``(kind, config, arrays)``.

    ``mmap=True`` returns read-only memory-mapped arrays. ``verify`` checks the SHA-256
    checksum (reads the whole file once). ``kind`` (optional) is the expected kind.
    """
    path = Path(path)
    header, start = read_header(path)
    if kind is not None and header.get("kind") != kind:
        raise IndexFileError(f"{path}: holds a {header.get('kind')!r}, expected a {kind!r}")
    payload_len = int(header["payload_len"])
    if verify:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            remaining = start + payload_len
            while remaining:
                chunk = f.read(min(remaining, 1 << 24))
                if not chunk:
                    raise IndexFileError(f"{path}: file is truncated")
                h.update(chunk)
                remaining -= len(chunk)
            stored = f.read(_CHECKSUM_LEN)
        if stored != h.digest():
            raise IndexFileError(f"{path}: checksum mismatch: the file was altered or corrupted")
    arrays: dict[str, np.ndarray] = {}
    if mmap and payload_len:
        base = np.memmap(path, dtype=np.uint8, mode="r", offset=start, shape=(payload_len,))
    else:
        with open(path, "rb") as f:
            f.seek(start)
            base = np.empty(payload_len, dtype=np.uint8)
            if f.readinto(memoryview(base)) != payload_len:
                raise IndexFileError(f"{path}: file is truncated")
    for meta in header["arrays"]:
        dt = np.dtype(meta["dtype"])
        shape = tuple(meta["shape"])
        seg = base[meta["offset"] : meta["offset"] + meta["nbytes"]]
        if seg.size != meta["nbytes"]:
            raise IndexFileError(f"{path}: array {meta['name']!r} runs past the end of the file")
        arr = seg.view(dt).reshape(shape) if meta["nbytes"] else np.zeros(shape, dtype=dt)
        arrays[meta["name"]] = arr
    return header["kind"], header["config"], arrays


def atomic_savez(path: str | os.PathLike, **arrays: np.ndarray) -> None:
    """``np.savez`` to ``path`` atomically (temporary file in the same folder, then rename)."""
    with atomic_file(path) as f:
        np.savez(f, **arrays)
