"""The gsu container format: one file holding a kind, a JSON config and named arrays.

Every persistent gsu object (indexes, behavior stores, item tables, BSE tables) is
written with :func:`write_container` and read through a :class:`ContainerReader`
(:func:`read_container` for the whole file at once).

Layout (all integers little-endian)::

    magic        8 bytes  b"GSUFILE\\x00"
    version      uint32   FORMAT_VERSION
    header_crc   uint32   CRC-32 of the JSON header bytes (0 in files written before per-array checksums)
    header_len   uint64   length of the JSON header in bytes
    header       JSON     {"kind", "config", "gsu_version", "arrays": [{name, dtype, shape, offset, nbytes, sha256}], "payload_len"}
    padding      to a 64-byte boundary
    payload      each array C-contiguous, little-endian, 64-byte aligned (offsets relative to the payload start)
    checksum     32 bytes SHA-256 over every byte before it

Checksums: the trailing SHA-256 covers the whole file; each array's own SHA-256 (hex,
``sha256`` in its header entry) covers its bytes, and the header carries its CRC-32 in
the prefix. Files written before per-array checksums (no ``sha256`` entries, a zero
CRC field) still load, with the whole-file check. With per-array checksums a reader
checks only what it reads: ``mmap=False`` hashes the arrays it has just read (one pass
over the file instead of two), and ``mmap=True`` with ``lazy`` (what
:func:`gsu.index.load` asks for) defers every array's check to a
:class:`PendingCheck` that the object runs on its first use, so opening costs O(header)
(plus the structural checks that need no more than offsets and ids).

Writes are atomic (:func:`atomic_file`): the file is written to a temporary name in
the same folder, flushed and fsync'ed, renamed over the target, and the folder is
fsync'ed. The temporary name ``.<name>.<host>.<pid>.<random>.gsutmp`` carries its
writer, who also holds a POSIX record lock on it until the rename; a later write to
the same target removes the temporaries of writers that died (:func:`remove_stale_temps`:
unlocked, and a writer process on this host that no longer runs, or another host's
older than a day) and never those of a live one. New files get the mode ``0o666`` less the umask; a file
that is replaced keeps its mode.

Reads use one open file descriptor: the header, the checksum pass and the arrays (or
the memory map) all come from the same inode, so a concurrent save (a rename over the
path) can never mix two versions. The header is validated before anything is
allocated from it (field types, dtypes and byte order, shapes, offsets inside the
payload, no overlaps); a file that fails raises :class:`gsu.errors.IndexFileError`
naming the file and the field. ``mmap=True`` maps the payload copy-on-write instead of
reading it (nothing is ever written back) (the file must then not be truncated in place while mapped: gsu never
does that, it always renames).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import secrets
import socket
import stat
import struct
import threading
import time
import zlib
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterator

import numpy as np

from gsu.errors import FieldError, IndexFileError

log = logging.getLogger(__name__)

MAGIC = b"GSUFILE\x00"
FORMAT_VERSION = 1
_PREFIX = struct.Struct("<8sIIQ")
_ALIGN = 64
_CHECKSUM_LEN = 32
_CHUNK = 1 << 24
#: where a payload read into memory (``mmap=False``) starts: on a page boundary, so that
#: every array in it starts on a 64-byte line as it does in the file (``_ALIGN``).
#: ``np.empty`` gave a base 16 bytes past a line, which split every 64-byte row of 8-bit
#: codes over two cache lines (:func:`aligned_empty`)
_BUF_ALIGN = 4096
#: the largest JSON header accepted (a header is a few kB; this bounds what a crafted
#: length field can make the reader allocate)
MAX_HEADER_BYTES = 64 << 20
#: dtype kinds a container may hold: bool, signed/unsigned integers, floats
_DTYPE_KINDS = "biuf"
_MAX_NDIM = 8

TMP_SUFFIX = ".gsutmp"
#: temporaries of another host (no pid to test) are stale after this many seconds
STALE_FOREIGN_SECONDS = 24 * 3600
_HEX = frozenset("0123456789abcdef")
_HOST = f"{zlib.crc32(socket.gethostname().encode()):08x}"


def _pad(n: int) -> int:
    return (-n) % _ALIGN


# ---------------------------------------------------------------------------
# atomic writes
# ---------------------------------------------------------------------------


def check_output_path(path: str | os.PathLike) -> Path:
    """``path`` as a :class:`Path`, refusing a folder (``IsADirectoryError``) or a parent
    that is a file (``NotADirectoryError``), both naming the path."""
    p = Path(path)
    if str(path) == "" or p.name in ("", ".", ".."):
        raise IsADirectoryError(f"{path!s}: is a folder, expected a file path")
    if p.is_dir():
        raise IsADirectoryError(f"{p}: is a folder, expected a file path")
    for parent in p.parents:
        if parent.exists():
            if not parent.is_dir():
                raise NotADirectoryError(f"{p}: {parent} is a file, not a folder")
            break
    return p


def _tmp_prefix(path: Path) -> str:
    return f".{path.name}."


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temps(path: str | os.PathLike) -> list[Path]:
    """Remove the temporary files that dead writers of ``path`` left beside it.

    A temporary is stale when no process holds its lock and either its writer (same
    host) is no longer running or it was written on another host more than
    :data:`STALE_FOREIGN_SECONDS` ago. Temporaries of live writers are never touched.
    Returns the paths removed.
    """
    p = Path(path)
    folder = p.parent if str(p.parent) else Path(".")
    prefix = _tmp_prefix(p)
    removed: list[Path] = []
    try:
        entries = [e for e in os.scandir(folder) if e.name.startswith(prefix) and e.name.endswith(TMP_SUFFIX)]
    except (FileNotFoundError, NotADirectoryError, PermissionError):
        return removed
    for e in entries:
        parts = e.name[len(prefix) : -len(TMP_SUFFIX)].split(".")
        if len(parts) != 3:
            continue
        host, pid_s, _ = parts
        try:
            pid = int(pid_s)
        except ValueError:
            continue
        try:
            fd = os.open(e.path, os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:
            continue
        try:
            try:
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                continue  # a live writer holds it
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                continue
            if host == _HOST:
                stale = pid != os.getpid() and not _pid_alive(pid)
            else:
                stale = time.time() - st.st_mtime > STALE_FOREIGN_SECONDS
            if stale:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(e.path)
                removed.append(Path(e.path))
        finally:
            os.close(fd)
    if removed:
        log.info("removed %d stale temporary file(s) of %s left by interrupted writers", len(removed), p)
    return removed


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """Open a temporary file beside ``path`` for binary writing; when the block ends
    without an error, flush, fsync and rename it over ``path`` (then fsync the folder);
    on any error remove it and leave ``path`` untouched.

    Stale temporaries of ``path`` (writers that died) are removed first. The new file
    gets ``0o666`` less the umask, or the mode of the file it replaces. A folder given
    as ``path`` raises ``IsADirectoryError`` before anything is written.
    """
    with atomic_path(path) as (tmp, fd):
        with os.fdopen(fd, "wb", closefd=False) as f:
            yield f
            f.flush()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[tuple[Path, int]]:
    """The mechanism behind :func:`atomic_file` for writers that need a path (h5py,
    SciPy, Parquet): yields ``(temporary path, its open descriptor)``; the caller
    writes the temporary by path (or through the descriptor) and the file is renamed
    over ``path`` when the block ends without an error."""
    p = check_output_path(path)
    folder = p.parent if str(p.parent) else Path(".")
    folder.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(p)
    try:
        mode = stat.S_IMODE(os.stat(p).st_mode)
    except FileNotFoundError:
        mode = None
    except OSError:
        mode = None
    tmp = folder / f"{_tmp_prefix(p)}{_HOST}.{os.getpid()}.{secrets.token_hex(4)}{TMP_SUFFIX}"
    fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)  # the umask applies
    try:
        # a POSIX record lock, not flock(): HDF5 flock()s the files it writes (it may
        # write this one by path), and the two kinds of locks do not conflict
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        if mode is not None:
            os.fchmod(fd, mode)
        yield tmp, fd
        os.fsync(fd)
        os.replace(tmp, p)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    finally:
        os.close(fd)
    _fsync_dir(folder)


def atomic_savez(path: str | os.PathLike, **arrays: np.ndarray) -> None:
    """``np.savez`` to ``path`` atomically (see :func:`atomic_file`)."""
    with atomic_file(path) as f:
        np.savez(f, **arrays)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_file`)."""
    with atomic_file(path) as f:
        f.write(data)


# ---------------------------------------------------------------------------
# writing containers
# ---------------------------------------------------------------------------


def _array_digest(a: np.ndarray) -> str:
    """Hex SHA-256 of a C-contiguous array's bytes (hashlib releases the GIL while hashing)."""
    h = hashlib.sha256()
    if a.size:
        flat = a.reshape(-1).view(np.uint8)
        for s in range(0, flat.shape[0], _CHUNK):
            h.update(memoryview(flat[s : s + _CHUNK]))
    return h.hexdigest()


def _header_crc(header: bytes) -> int:
    """CRC-32 of the header bytes, never 0 (0 marks a file written without it)."""
    return zlib.crc32(header) or 1


def write_container(path: str | os.PathLike, kind: str, config: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
    """Write ``arrays`` and ``config`` (JSON-serialisable) under ``kind`` to ``path`` atomically."""
    from gsu import __version__

    path = check_output_path(path)
    metas = []
    offset = 0
    prepared: list[np.ndarray] = []
    for name, arr in arrays.items():
        a = np.ascontiguousarray(arr)
        if a.dtype.kind not in _DTYPE_KINDS:
            raise TypeError(f"array {name!r}: dtype {a.dtype} cannot be saved (expected bool, integer or float)")
        if a.dtype.byteorder == ">":
            a = a.astype(a.dtype.newbyteorder("<"))
        offset += _pad(offset)
        metas.append({"name": name, "dtype": a.dtype.str, "shape": list(a.shape), "offset": offset, "nbytes": int(a.nbytes),
                      "sha256": _array_digest(a)})
        prepared.append(a)
        offset += a.nbytes
    payload_len = offset
    header = json.dumps(
        {"kind": kind, "config": config, "gsu_version": __version__, "arrays": metas, "payload_len": payload_len},
        sort_keys=True,
        allow_nan=False,
    ).encode()
    prefix = _PREFIX.pack(MAGIC, FORMAT_VERSION, _header_crc(header), len(header))
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


# ---------------------------------------------------------------------------
# reading containers
# ---------------------------------------------------------------------------


def open_regular(path: str | os.PathLike) -> tuple[int, os.stat_result]:
    """Open ``path`` read-only and return ``(fd, fstat)``; a missing path raises
    ``FileNotFoundError``, a folder ``IsADirectoryError``, anything else that is not a
    regular file (a FIFO, a device) :class:`IndexFileError` — all naming the path."""
    p = str(path)
    try:
        fd = os.open(p, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except FileNotFoundError:
        raise FileNotFoundError(f"{p}: no such file") from None
    except IsADirectoryError:
        raise IsADirectoryError(f"{p}: is a folder, expected a file") from None
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise IsADirectoryError(f"{p}: is a folder, expected a file")
        if not stat.S_ISREG(st.st_mode):
            raise IndexFileError(f"{p}: not a regular file")
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd, st


def _pread_exact(fd: int, n: int, offset: int) -> bytes:
    out = bytearray()
    while len(out) < n:
        b = os.pread(fd, min(n - len(out), _CHUNK), offset + len(out))
        if not b:
            break
        out += b
    return bytes(out)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def aligned_empty(shape: int | tuple[int, ...], dtype: Any = np.uint8, align: int = _BUF_ALIGN) -> np.ndarray:
    """``np.empty(shape, dtype)`` whose data starts on an ``align``-byte boundary (a view of
    a slightly larger buffer). numpy's own large allocations start 16 bytes past a page
    (glibc's chunk header), so rows of a table read by the scan kernels — 64-byte rows of
    8-bit codes, 128-byte rows of 32-d float32 — straddled one more cache line each."""
    dt = np.dtype(dtype)
    shp = (shape,) if isinstance(shape, int) else tuple(shape)
    nbytes = int(np.prod(shp, dtype=np.int64)) * dt.itemsize
    raw = np.empty(nbytes + align, dtype=np.uint8)
    off = (-raw.ctypes.data) % align
    return raw[off : off + nbytes].view(dt).reshape(shp)


def aligned_take(a: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """``a[idx]`` (rows of a 2-D table) written straight into :func:`aligned_empty` memory:
    one copy, where ``aligned(a[idx])`` made two."""
    out = aligned_empty((idx.shape[0],) + a.shape[1:], a.dtype)
    np.take(a, idx, axis=0, out=out)
    return out


def aligned(a: np.ndarray, align: int = _ALIGN) -> np.ndarray:
    """``a`` itself when it is C-contiguous and starts on an ``align``-byte boundary, else a
    C-contiguous copy that does (:func:`aligned_empty`): for tables the scan kernels read
    row by row, whose rows should not straddle an extra cache line."""
    if a.flags.c_contiguous and a.ctypes.data % align == 0:
        return a
    out = aligned_empty(a.shape, a.dtype)
    out[...] = a
    return out


class ContainerReader:
    """One open gsu container. Everything (header, checksum, arrays, memory map) is read
    from the single file descriptor opened here, so a concurrent rename over the path
    cannot mix two files.

    Attributes (after construction): ``path``, ``kind``, ``config``, ``header`` (the
    validated JSON header), ``metas`` (one dict per array), ``start`` (payload offset),
    ``payload_len``, ``size``. Use as a context manager, or call :meth:`close`; arrays
    returned with ``mmap=True`` stay valid after closing (the mapping keeps the inode).
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._fd, st = open_regular(path)
        self.size = int(st.st_size)
        try:
            self._read_header()
        except BaseException:
            self.close()
            raise

    # -- header --------------------------------------------------------------
    def _fail(self, msg: str) -> IndexFileError:
        return IndexFileError(f"{self.path}: {msg}")

    def _read_header(self) -> None:
        raw = _pread_exact(self._fd, _PREFIX.size, 0)
        if len(raw) < _PREFIX.size:
            raise self._fail(f"file is truncated ({self.size} bytes): not a gsu file")
        magic, version, header_crc, header_len = _PREFIX.unpack(raw)
        if magic != MAGIC:
            raise self._fail(f"not a gsu file (bad magic bytes {magic!r})")
        if version != FORMAT_VERSION:
            raise self._fail(f"format version {version} is not supported (this gsu reads {FORMAT_VERSION})")
        if header_len > MAX_HEADER_BYTES:
            raise self._fail(f"header length {header_len} is over the {MAX_HEADER_BYTES} byte limit: altered or not a gsu file")
        if _PREFIX.size + header_len > self.size:
            raise self._fail("file is truncated (header runs past the end)")
        hb = _pread_exact(self._fd, header_len, _PREFIX.size)
        if len(hb) != header_len:
            raise self._fail("file is truncated (header runs past the end)")
        if header_crc and _header_crc(hb) != header_crc:
            raise self._fail("header checksum mismatch: the file was altered or corrupted")
        try:
            header = json.loads(hb)
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
            raise self._fail(f"header is corrupted ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None
        start = _PREFIX.size + header_len
        start += _pad(start)
        self.start = start
        self._check_header(header)
        self.header = header
        self.kind = header["kind"]
        self.config = header["config"]
        self.metas = header["arrays"]
        self.payload_len = int(header["payload_len"])
        #: every array carries its own SHA-256 (files written since per-array checksums)
        self.per_array = bool(header_crc) and all("sha256" in m for m in self.metas)

    def _check_header(self, header: Any) -> None:
        if not isinstance(header, dict):
            raise self._fail(f"header is a JSON {type(header).__name__}, expected an object")
        kind = header.get("kind")
        if not isinstance(kind, str):
            raise self._fail(f"header field 'kind': expected a string, got {kind!r:.80}")
        if not isinstance(header.get("config"), dict):
            raise self._fail("header field 'config': expected a JSON object")
        plen = header.get("payload_len")
        if not _is_int(plen) or plen < 0:
            raise self._fail(f"header field 'payload_len': expected a non-negative integer, got {plen!r:.80}")
        expected = self.start + plen + _CHECKSUM_LEN
        if self.size != expected:
            raise self._fail(f"file size {self.size} bytes does not match its header ({expected} bytes): truncated or altered")
        metas = header.get("arrays")
        if not isinstance(metas, list):
            raise self._fail("header field 'arrays': expected a list")
        names: set[str] = set()
        end_prev = 0
        for i, m in enumerate(metas):
            where = f"header field arrays[{i}]"
            if not isinstance(m, dict):
                raise self._fail(f"{where}: expected an object")
            name = m.get("name")
            if not isinstance(name, str) or not name:
                raise self._fail(f"{where}.name: expected a non-empty string, got {name!r:.80}")
            if name in names:
                raise self._fail(f"{where}.name: array {name!r} appears twice")
            names.add(name)
            where = f"array {name!r}"
            ds = m.get("dtype")
            if not isinstance(ds, str):
                raise self._fail(f"{where}: dtype {ds!r:.80} is not a dtype string")
            try:
                dt = np.dtype(ds)
            except (TypeError, ValueError, SyntaxError) as e:
                raise self._fail(f"{where}: dtype {ds!r:.80} is not a valid dtype ({type(e).__name__})") from None
            if dt.kind not in _DTYPE_KINDS or dt.fields is not None or dt.subdtype is not None or dt.str != ds:
                raise self._fail(f"{where}: dtype {ds!r:.80} is not allowed (bool, integers and floats only)")
            if dt.byteorder == ">" or (dt.byteorder == "=" and not np.little_endian):
                raise self._fail(f"{where}: dtype {ds!r} is big-endian; gsu files are little-endian")
            shape = m.get("shape")
            if not isinstance(shape, list) or len(shape) > _MAX_NDIM or not all(_is_int(s) and s >= 0 for s in shape):
                raise self._fail(f"{where}: shape {shape!r:.80} is not a list of at most {_MAX_NDIM} non-negative integers")
            count = 1
            for s in shape:
                count *= s
            nbytes, off = m.get("nbytes"), m.get("offset")
            if not _is_int(nbytes) or nbytes != count * dt.itemsize:
                raise self._fail(f"{where}: nbytes {nbytes!r:.80} does not match shape {shape} of {dt}")
            if not _is_int(off) or off < 0 or off % dt.itemsize or (nbytes and off % _ALIGN):
                raise self._fail(f"{where}: offset {off!r:.80} is not a {_ALIGN}-byte aligned position")
            if off < end_prev and nbytes:
                raise self._fail(f"{where}: offset {off} overlaps the array before it")
            if off + nbytes > plen:
                raise self._fail(f"{where}: runs past the end of the payload ({off} + {nbytes} > {plen} bytes)")
            if nbytes:
                end_prev = off + nbytes
            digest = m.get("sha256")
            if digest is not None and not (isinstance(digest, str) and len(digest) == 64 and all(ch in _HEX for ch in digest)):
                raise self._fail(f"{where}: sha256 {digest!r:.80} is not 64 lowercase hex digits")

    # -- checksum --------------------------------------------------------------
    def verify(self) -> None:
        """Check the SHA-256 checksum (reads the whole file once, from this descriptor)."""
        h = hashlib.sha256()
        end = self.start + self.payload_len
        pos = 0
        while pos < end:
            chunk = os.pread(self._fd, min(end - pos, _CHUNK), pos)
            if not chunk:
                raise self._fail("file is truncated")
            h.update(chunk)
            pos += len(chunk)
        stored = _pread_exact(self._fd, _CHECKSUM_LEN, end)
        if stored != h.digest():
            raise self._fail("checksum mismatch: the file was altered or corrupted")

    def verify_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        """Check each array's own SHA-256 (files with :attr:`per_array` checksums)."""
        verify_array_digests(self.path, self.metas, arrays)

    # -- arrays --------------------------------------------------------------
    def arrays(self, *, mmap: bool = False) -> dict[str, np.ndarray]:
        """Every array, by name: read into memory, or (``mmap=True``) views of one
        copy-on-write memory map of the payload.

        Copy-on-write (``MAP_PRIVATE``) rather than read-only: nothing ever reaches the
        file (an in-place update stays in this process), and the arrays have the same
        numba type (writable) as those of an index built or read into memory, so a
        loaded index runs the kernels already compiled for a built one instead of
        compiling a read-only specialisation of each on its first search.
        """
        plen = self.payload_len
        if mmap and plen:
            with os.fdopen(os.dup(self._fd), "rb") as f:
                # a plain ndarray view (it keeps the map alive through .base): numba types
                # an ndarray subclass on a slow path, ~0.7 us more per kernel call
                base = np.memmap(f, dtype=np.uint8, mode="c", offset=self.start, shape=(plen,)).view(np.ndarray)
        else:
            base = aligned_empty(plen)
            mv = memoryview(base)
            pos = 0
            while pos < plen:
                n = os.preadv(self._fd, [mv[pos : pos + _CHUNK]], self.start + pos)
                if n <= 0:
                    raise self._fail("file is truncated")
                pos += n
        out: dict[str, np.ndarray] = {}
        for m in self.metas:
            dt = np.dtype(m["dtype"])
            shape = tuple(m["shape"])
            if m["nbytes"]:
                out[m["name"]] = base[m["offset"] : m["offset"] + m["nbytes"]].view(dt).reshape(shape)
            else:
                out[m["name"]] = np.zeros(shape, dtype=dt)
        return out

    def close(self) -> None:
        fd, self._fd = getattr(self, "_fd", -1), -1
        if fd >= 0:
            os.close(fd)

    def __enter__(self) -> "ContainerReader":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:  # pragma: no cover - a reader dropped without close()
        with contextlib.suppress(Exception):
            self.close()


def verify_array_digests(path: str | os.PathLike, metas: list[dict[str, Any]], arrays: dict[str, np.ndarray]) -> None:
    """Hash each array of ``arrays`` (read or memory-mapped from ``path``) and compare it
    with the ``sha256`` of its header entry in ``metas``; a mismatch raises
    :class:`IndexFileError` naming the file and the array."""
    for m in metas:
        want = m.get("sha256")
        a = arrays.get(m["name"])
        if want is None or a is None or not m["nbytes"]:
            continue
        if _array_digest(np.ascontiguousarray(a)) != want:
            raise IndexFileError(f"{path}: array {m['name']!r}: checksum mismatch: the file was altered or corrupted")


class PendingCheck:
    """The checks an object opened with ``mmap=True`` still owes: each array's SHA-256
    (and ``then``, a further check of the arrays' values), run once on first use.

    :meth:`run` is thread-safe and idempotent: the first caller hashes, others wait for
    it; a failure is remembered and raised again by every later call (the object stays
    unusable). ``force=True`` hashes again even after a success (an explicit verify).
    """

    def __init__(self, path: str | os.PathLike, metas: list[dict[str, Any]], arrays: dict[str, np.ndarray]):
        self.path = Path(path)
        self.metas = metas
        self.arrays = dict(arrays)
        self.then: Callable[[], None] | None = None
        self.done = False
        self._error: BaseException | None = None
        self._lock = threading.Lock()

    def run(self, *, force: bool = False) -> None:
        if self.done and not force:
            return
        with self._lock:
            if self._error is not None:
                raise self._error
            if self.done and not force:
                return
            try:
                verify_array_digests(self.path, self.metas, self.arrays)
                if self.then is not None:
                    self.then()
            except IndexFileError as e:
                self._error = e
                raise
            except FieldError as e:
                self._error = IndexFileError(f"{self.path}: {e.field}: {one_line(e.reason)}")
                raise self._error from None
            self.done = True

    def __repr__(self) -> str:
        state = "failed" if self._error is not None else ("verified" if self.done else "pending")
        return f"PendingCheck({str(self.path)!r}, {state})"


def read_header(path: str | os.PathLike) -> tuple[dict[str, Any], int]:
    """Return the validated JSON header of a container and the payload's byte offset."""
    with ContainerReader(path) as r:
        return r.header, r.start


def read_container(
    path: str | os.PathLike, *, mmap: bool = False, verify: bool = True, kind: str | None = None
) -> tuple[str, dict[str, Any], dict[str, np.ndarray]]:
    """Read a container: returns ``(kind, config, arrays)``.

    ``mmap=True`` returns copy-on-write memory-mapped arrays. ``verify`` checks the SHA-256
    checksum (reads the whole file once). ``kind`` (optional) is the expected kind.
    """
    with ContainerReader(path) as r:
        if kind is not None and r.kind != kind:
            raise IndexFileError(f"{path}: holds a {r.kind!r}, expected a {kind!r}")
        if verify:
            r.verify()
        return r.kind, r.config, r.arrays(mmap=mmap)


def load_container(
    path: str | os.PathLike,
    build: Callable[..., Any],
    *,
    mmap: bool = False,
    verify: bool = True,
    kind: str | None = None,
    what: str = "file",
    lazy: bool = False,
) -> Any:
    """Read a container and turn it into an object with ``build(kind, config, arrays)``.

    ``build`` validates before it hands arrays to any kernel and raises
    :class:`gsu.errors.FieldError` (or ``KeyError``/``TypeError``/``ValueError``) for a
    file that is inconsistent; every such error, and any error while building, becomes
    one :class:`IndexFileError` line naming the file (and the field). ``what`` names
    the object in those messages.

    Checksums (``verify``): a file with per-array checksums is checked array by array
    from what was read (``mmap=False``: one pass over the file). With ``lazy`` the
    builder is called as ``build(kind, config, arrays, pending)``: ``pending`` is a
    :class:`PendingCheck` when the checksums were deferred (``mmap=True``, a file with
    per-array checksums; the builder attaches it to the object, which runs it on first
    use) and ``None`` when they were already checked (or ``verify`` is false).
    """
    pending: PendingCheck | None = None
    with ContainerReader(path) as r:
        if kind is not None and r.kind != kind:
            raise IndexFileError(f"{path}: holds a {r.kind!r}, expected a {kind!r}")
        if verify and not r.per_array:
            r.verify()  # a file written before per-array checksums: the whole-file check
        arrays = r.arrays(mmap=mmap)
        if verify and r.per_array:
            if mmap and lazy:
                pending = PendingCheck(r.path, r.metas, arrays)
            else:
                r.verify_arrays(arrays)
        k = r.kind
        config = r.config
    try:
        return build(k, config, arrays, pending) if lazy else build(k, config, arrays)
    except IndexFileError:
        raise
    except FieldError as e:
        raise IndexFileError(f"{path}: {e.field}: {one_line(e.reason)}") from None
    except KeyError as e:
        raise IndexFileError(f"{path}: inconsistent {what}: missing {one_line(str(e))}") from None
    except (TypeError, ValueError, IndexError, OverflowError, RuntimeError, AttributeError, MemoryError) as e:
        raise IndexFileError(f"{path}: inconsistent {what} ({type(e).__name__}: {one_line(str(e))})") from None


def one_line(msg: str, limit: int = 300) -> str:
    """``msg`` on one line (newlines folded), at most ``limit`` characters."""
    s = " ".join(str(msg).split())
    return s if len(s) <= limit else s[: limit - 3] + "..."
