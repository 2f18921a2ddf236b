"""Fuzzing of saved gsu files: mutate the header or the arrays of a saved file of every
index kind (and of a behavior store, an item table and BSE tables), recompute the
checksum so the file passes it, then load and use it. Every mutated file must either be
refused with one :class:`~gsu.errors.IndexFileError` line naming the file, or load into
an object whose answers are correct for what it holds (``_kinds.check_result``): never a
crash, a raw faiss/``IndexError`` traceback, an id that is not in the index, or a score
that is not the exact score of its id.

Run directly for a report: ``python tests/_fuzz.py --files 2000 --seed 1`` (prints the
counts per kind and per outcome).
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import struct
import sys
import time
import zlib
from collections import Counter
from pathlib import Path
from typing import Any, Callable

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _kinds as K  # noqa: E402

from gsu._format import MAGIC  # noqa: E402
from gsu.errors import IndexFileError  # noqa: E402
from gsu.index import Filter, load  # noqa: E402

OTHER_KINDS = ("behavior_store", "item_table", "bse")
ALL_KINDS = K.KINDS + OTHER_KINDS
_PREFIX = struct.Struct("<8sIIQ")


# ---------------------------------------------------------------------------
# originals
# ---------------------------------------------------------------------------


def make_original(kind: str, folder: Path) -> Path:
    """Save a small object of ``kind`` under ``folder`` and return its path."""
    path = folder / f"orig-{kind}.gsu"
    if kind in K.KINDS:
        idx = K.make(kind)
        n = 160
        idx.add(K.data(kind, n, seed=5), np.arange(n, dtype=np.int64) * 3 + 11)
        if kind == "seismic":
            idx.add(K.data(kind, 10, seed=6), np.arange(10, dtype=np.int64) + 10_000)  # some rows past the build
            idx.vocabulary = {f"tok{j}": j for j in range(K.VOCAB)}
        # removed rows and an upsert: the file holds tombstones (and an id twice, once dead)
        idx.compact_threshold = 1.0
        idx.remove(np.arange(0, n, 9, dtype=np.int64) * 3 + 11)
        idx.upsert(K.data(kind, 2, seed=7), np.array([14, 20_000], np.int64))
        idx.save(path)
    elif kind == "behavior_store":
        from gsu.retrieval import BehaviorStore

        rng = np.random.default_rng(0)
        users = rng.integers(0, 12, 300)
        BehaviorStore.from_arrays(users * 5 + 1, rng.integers(0, 50, 300), rng.integers(0, 1000, 300),
                                  behavior_type=rng.integers(0, 3, 300), category=rng.integers(0, 7, 300)).save(path)
    elif kind == "item_table":
        import scipy.sparse as sp

        from gsu.retrieval import ItemTable

        rng = np.random.default_rng(1)
        sparse = sp.random(50, 30, density=0.2, format="csr", random_state=2, dtype=np.float32)
        ItemTable(ids=np.arange(50) * 2 + 1, embeddings=rng.standard_normal((50, 8)).astype(np.float32),
                  category=rng.integers(0, 5, 50), sparse=sparse).save(path)
    elif kind == "bse":
        from gsu.retrieval import BehaviorSequenceEncoder

        rng = np.random.default_rng(2)
        emb = rng.standard_normal((120, 8)).astype(np.float32)
        BehaviorSequenceEncoder(8, n_hashes=12, tau=3, seed=4).fit(emb, np.array([0, 30, 70, 120]), user_ids=[5, 9, 13]).save(path)
    else:
        raise ValueError(kind)
    return path


# ---------------------------------------------------------------------------
# raw container editing
# ---------------------------------------------------------------------------


def split(data: bytes) -> tuple[dict[str, Any], bytes]:
    _, _, _, hlen = _PREFIX.unpack_from(data, 0)
    header = json.loads(data[_PREFIX.size : _PREFIX.size + hlen])
    start = _PREFIX.size + hlen
    start += (-start) % 64
    return header, data[start : start + header["payload_len"]]


def join(header: Any, payload: bytes, *, per_array: bool = True) -> bytes:
    """A file with valid checksums: each array's SHA-256 (where its header entry names a
    byte range inside the payload) and the header's CRC-32 as the writer computes them,
    and the whole-file SHA-256; ``per_array=False`` writes the older layout (whole-file
    checksum only)."""
    if isinstance(header, dict) and isinstance(header.get("arrays"), list):
        for m in header["arrays"]:
            if not isinstance(m, dict):
                continue
            m.pop("sha256", None)
            off, nb = m.get("offset"), m.get("nbytes")
            if per_array and type(off) is int and type(nb) is int and 0 <= off and 0 <= nb and off + nb <= len(payload):
                m["sha256"] = hashlib.sha256(payload[off : off + nb]).hexdigest()
    hb = json.dumps(header).encode()
    crc = (zlib.crc32(hb) or 1) if per_array else 0
    head = _PREFIX.pack(MAGIC, 1, crc, len(hb)) + hb
    head += b"\x00" * ((-len(head)) % 64)
    body = head + payload
    return body + hashlib.sha256(body).digest()  # a valid checksum: the file lies, it is not damaged


_DTYPES = [">f4", ">i8", "<f8", "<i4", "|u1", "<u8", "<f2", "|b1", "<u2", "<i2", "O", "<c8", "|V8", "<M8[s]", "bogus", 5, None]
_SPECIAL_INT = [-1, 0, 1, -2, 2**31 - 1, -(2**31), 2**63 - 1, -(2**63), 10**6, 159, 160, 161, 255, 65535, 2**32]
_SPECIAL_FLOAT = [np.nan, np.inf, -np.inf, -1e30, 1e30, -0.0, -1.0, 0.0, 3e38]


def _meta(h: dict, rng: np.random.Generator) -> dict | None:
    arrs = [m for m in h.get("arrays", []) if isinstance(m, dict)]
    return arrs[rng.integers(len(arrs))] if arrs else None


def _fit_nbytes(m: dict, plen: int) -> None:
    try:
        count = int(np.prod(m["shape"])) if m["shape"] else 1
        m["nbytes"] = count * np.dtype(m["dtype"]).itemsize
    except (TypeError, ValueError, KeyError, OverflowError):
        pass


def mut_dtype(h, p, rng):
    m = _meta(h, rng)
    if m is None:
        return None
    m["dtype"] = _DTYPES[rng.integers(len(_DTYPES))]
    if rng.random() < 0.6 and isinstance(m["dtype"], str) and m.get("shape"):
        try:  # reinterpret the same bytes: the last axis absorbs the itemsize change
            isz = np.dtype(m["dtype"]).itemsize
            if isz and m["nbytes"] % isz == 0:
                rest = int(np.prod(m["shape"][:-1])) if len(m["shape"]) > 1 else 1
                if rest and (m["nbytes"] // isz) % rest == 0:
                    m["shape"][-1] = m["nbytes"] // isz // rest
        except (TypeError, ValueError):
            pass
    return h, p, f"dtype of {m.get('name')} -> {m['dtype']!r}"


def mut_shape(h, p, rng):
    m = _meta(h, rng)
    if m is None or not isinstance(m.get("shape"), list):
        return None
    sh = m["shape"]
    op = rng.integers(8)
    if sh and op < 5:
        i = rng.integers(len(sh))
        sh[i] = [sh[i] - 1, sh[i] + 1, 0, sh[i] * 2, -1][op]
    elif op == 5:
        sh.append(1)
    elif op == 6 and sh:
        sh.pop()
    else:
        m["shape"] = [2**40] + sh[1:] if sh else [3]
    if rng.random() < 0.7:
        _fit_nbytes(m, len(p))
    return h, p, f"shape of {m.get('name')} -> {m['shape']} ({m.get('nbytes')} bytes)"


def mut_offset(h, p, rng):
    m = _meta(h, rng)
    if m is None:
        return None
    m["offset"] = [m["offset"] + 64, m["offset"] - 64, m["offset"] + 1, 0, 2**62, -64, "0"][rng.integers(7)]
    return h, p, f"offset of {m.get('name')} -> {m['offset']}"


def mut_nbytes(h, p, rng):
    m = _meta(h, rng)
    if m is None:
        return None
    m["nbytes"] = [m["nbytes"] + 1, m["nbytes"] - 8, 0, m["nbytes"] * 2][rng.integers(4)]
    return h, p, f"nbytes of {m.get('name')} -> {m['nbytes']}"


def mut_name(h, p, rng):
    arrs = h["arrays"]
    if not arrs:
        return None
    i = rng.integers(len(arrs))
    op = rng.integers(3)
    if op == 0:
        name = arrs[i]["name"]
        del arrs[i]
        return h, p, f"array {name} removed from the header"
    if op == 1 and len(arrs) > 1:
        j = (i + 1 + rng.integers(len(arrs) - 1)) % len(arrs)
        arrs[i]["name"] = arrs[j]["name"]
        return h, p, f"array {i} renamed to {arrs[j]['name']}"
    arrs[i]["name"] = arrs[i]["name"] + "_x"
    return h, p, f"array {arrs[i]['name']} renamed"


def _config_paths(cfg: Any, prefix: tuple = ()) -> list[tuple]:
    out = []
    if isinstance(cfg, dict):
        for k, v in cfg.items():
            out.append(prefix + (k,))
            out.extend(_config_paths(v, prefix + (k,)))
    return out


def mut_config(h, p, rng):
    paths = _config_paths(h["config"])
    if not paths:
        return None
    path = paths[rng.integers(len(paths))]
    parent = h["config"]
    for k in path[:-1]:
        parent = parent[k]
    key = path[-1]
    v = parent[key]
    if rng.random() < 0.1:
        del parent[key]
        return h, p, f"config {'.'.join(path)} removed"
    if isinstance(v, bool):
        choices = [not v, 1, "true", None]
    elif isinstance(v, int):
        choices = [v + 1, v - 1, 0, -1, v * 2, 2**31, 2**63, -(2**63) - 1, 10**30, str(v), v + 0.5, None, True, [v]]
    elif isinstance(v, float):
        choices = [0.0, -1.0, 1e308, 2.0, v * 10, "x", None, float("nan")]
    elif isinstance(v, str):
        choices = ["", "other", "cosine", "ip", "float16", "float32", 5, None]
    elif isinstance(v, dict):
        choices = [None, [], {}, 3]
    else:
        choices = [0, 5, "x", None, [1, 2]]
    parent[key] = choices[rng.integers(len(choices))]
    return h, p, f"config {'.'.join(path)} {v!r:.40} -> {parent[key]!r:.40}"


def mut_kind(h, p, rng):
    h["kind"] = [*K.KINDS, *OTHER_KINDS, "nope", 3, None][rng.integers(len(K.KINDS) + len(OTHER_KINDS) + 3)]
    return h, p, f"kind -> {h['kind']!r}"


def mut_structure(h, p, rng):
    op = rng.integers(5)
    if op == 0:
        h["payload_len"] = h["payload_len"] + [64, -64, 1][rng.integers(3)]
    elif op == 1:
        h["arrays"] = {"a": 1}
    elif op == 2:
        h["config"] = [1, 2]
    elif op == 3:
        h = [h]
    else:
        h["arrays"] = h["arrays"] + [{"name": "extra", "dtype": "<f4", "shape": [4], "offset": 0, "nbytes": 16}]
    return h, p, f"structure op {op}"


def _array_view(h, p, rng, *, want_blob: bool = False):
    metas = [m for m in h["arrays"] if m["nbytes"] > 0]
    if want_blob:
        metas = [m for m in metas if m["dtype"] == "|u1"] or metas
    if not metas:
        return None
    m = metas[rng.integers(len(metas))]
    buf = bytearray(p)
    a = np.frombuffer(buf, dtype=np.dtype(m["dtype"]), count=m["nbytes"] // np.dtype(m["dtype"]).itemsize, offset=m["offset"])
    return m, buf, a


def _writable(a: np.ndarray) -> np.ndarray:
    a.flags.writeable = True
    return a


def mut_bytes(h, p, rng):
    r = _array_view(h, p, rng)
    if r is None:
        return None
    m, buf, _ = r
    for _ in range(rng.integers(1, 5)):
        pos = m["offset"] + rng.integers(m["nbytes"])
        buf[pos] ^= 1 << rng.integers(8)
    return h, bytes(buf), f"bytes flipped in {m['name']}"


def mut_special(h, p, rng):
    r = _array_view(h, p, rng)
    if r is None:
        return None
    m, buf, a = r
    a = _writable(a)
    i = rng.integers(a.shape[0])
    if a.dtype.kind == "f":
        v = _SPECIAL_FLOAT[rng.integers(len(_SPECIAL_FLOAT))]
        with np.errstate(over="ignore", invalid="ignore"):
            a[i] = v
    else:
        info = np.iinfo(a.dtype) if a.dtype.kind in "iu" else None
        v = _SPECIAL_INT[rng.integers(len(_SPECIAL_INT))]
        if info is not None:
            v = int(np.clip(v, info.min, info.max))
            a[i] = v
        else:
            a[i] = bool(v)
    return h, bytes(buf), f"{m['name']}[{i}] = {v!r}"


def mut_permute(h, p, rng):
    r = _array_view(h, p, rng)
    if r is None:
        return None
    m, buf, a = r
    a = _writable(a)
    op = rng.integers(4)
    if a.shape[0] < 2:
        return None
    if op == 0:
        i, j = rng.choice(a.shape[0], 2, replace=False)
        a[i], a[j] = a[j].copy(), a[i].copy()
    elif op == 1:
        a[:] = a[::-1].copy()
    elif op == 2:
        a[:] = np.sort(a)[::-1] if a.dtype.kind != "b" else a[::-1].copy()
    else:
        a[:] = a[rng.permutation(a.shape[0])]
    return h, bytes(buf), f"{m['name']} permuted (op {op})"


def mut_blob(h, p, rng):
    """Integer fields inside a byte blob (faiss's serialisation, vocabulary bytes)."""
    r = _array_view(h, p, rng, want_blob=True)
    if r is None:
        return None
    m, buf, _ = r
    n = m["nbytes"]
    pos = int(rng.integers(min(n, 400))) if rng.random() < 0.6 else int(rng.integers(n))
    width = [1, 4, 8][rng.integers(3)]
    pos = min(pos - pos % width, n - width)
    if pos < 0:
        return None
    v = _SPECIAL_INT[rng.integers(len(_SPECIAL_INT))]
    fmt = {1: "<B", 4: "<i", 8: "<q"}[width]
    lo, hi = {1: (0, 255), 4: (-(2**31), 2**31 - 1), 8: (-(2**63), 2**63 - 1)}[width]
    struct.pack_into(fmt, buf, m["offset"] + pos, int(np.clip(v, lo, hi)))
    return h, bytes(buf), f"{m['name']} bytes {pos}..{pos + width} = {v}"


def mut_truncate(h, p, rng):
    """A consistent shorter array: the header says one row less (the bytes stay)."""
    m = _meta(h, rng)
    if m is None or not m["shape"] or m["shape"][0] == 0:
        return None
    m["shape"][0] -= 1
    _fit_nbytes(m, len(p))
    return h, p, f"{m['name']} one row shorter"


MUTATIONS: list[Callable] = [mut_dtype, mut_shape, mut_offset, mut_nbytes, mut_name, mut_config, mut_config, mut_kind,
                             mut_structure, mut_bytes, mut_special, mut_special, mut_permute, mut_blob, mut_blob, mut_truncate]


def mutate(data: bytes, rng: np.random.Generator) -> tuple[bytes, str]:
    header, payload = split(data)
    for _ in range(20):
        r = MUTATIONS[rng.integers(len(MUTATIONS))](copy.deepcopy(header), payload, rng)
        if r is not None:
            h, p, what = r
            return join(h, p, per_array=bool(rng.integers(4))), what
    raise RuntimeError("no mutation applied")


# ---------------------------------------------------------------------------
# using a loaded file
# ---------------------------------------------------------------------------


def load_any(kind: str, path: Path, *, mmap: bool) -> Any:
    if kind in K.KINDS:
        return load(path, mmap=mmap)
    if kind == "behavior_store":
        from gsu.retrieval import BehaviorStore

        return BehaviorStore.load(path, mmap=mmap)
    if kind == "item_table":
        from gsu.retrieval import ItemTable

        return ItemTable.load(path, mmap=mmap)
    from gsu.retrieval import BehaviorSequenceEncoder

    return BehaviorSequenceEncoder.load(path, mmap=mmap)


def use(kind: str, obj: Any, rng: np.random.Generator) -> None:
    """Exercise a loaded object and check its answers against what it holds."""
    if kind in K.KINDS:
        real = type(obj).KIND
        q = K.queries(real, 4, seed=int(rng.integers(1000)))
        if real in K.SPARSE and obj.dim != q.shape[1]:  # a file may declare a larger vocabulary than it uses
            import scipy.sparse as sp

            q = sp.csr_matrix((q.data, q.indices, q.indptr), shape=(4, max(obj.dim, q.shape[1])))[:, : obj.dim].tocsr()
        params = K.PARAMS[real]
        ids = np.asarray(obj.ids)
        for k in (5, max(1, obj.ntotal + 2)):
            res = obj.search(q, k, **params)
            K.check_result(obj, real, q, res, k)
        if ids.size:
            allowed = ids[rng.random(ids.shape[0]) < 0.3]
            res = obj.search(q, 5, filter=Filter.from_ids(allowed), **params)
            K.check_result(obj, real, q, res, 5, allowed=allowed)
            per = Filter.per_query([ids[i::4] for i in range(4)])
            res = obj.search(q, 3, filter=per, **params)
            for i in range(4):
                sub = res.ids[i][res.ids[i] != -1]  # (a -1 hole is possible only when scores overflow: checked by check_result)
                assert np.isin(sub, ids[i::4]).all(), "per-query filter: an excluded id"
        return
    if kind == "behavior_store":
        for u in obj.user_ids[:20]:
            h = obj.history(u)
            if len(h):
                pos = np.array([[0, len(h) - 1, -1]])
                got = obj.gather([u], pos, "items")
                assert got[0, 0] == h.items[0] and got[0, 2] == -1
        return
    if kind == "item_table":
        if obj.n_items:
            r = obj.rows(obj.ids[:5])
            assert np.array_equal(obj.ids[r], obj.ids[:5])
            if obj.embeddings is not None:
                assert obj.embedding(obj.ids[:3]).shape[0] == min(3, obj.n_items)
            if obj.sparse is not None:
                _ = obj.sparse[r] @ obj.sparse[r].T
        return
    if obj.n_users:
        t = np.random.default_rng(0).standard_normal((3, obj.dim)).astype(np.float32)
        vec, mask = obj.aggregate(int(obj.user_ids[0]), t)
        assert vec.shape == (3, obj.dim) and np.isfinite(vec).all()


def run(n_files: int, seed: int, folder: Path, kinds: tuple[str, ...] = ALL_KINDS, log: Callable[[str], None] | None = None) -> Counter:
    """Mutate ``n_files`` files (round-robin over ``kinds``); raise on the first bad outcome.

    Returns counts per (kind, outcome), outcome ``refused`` (a clean IndexFileError) or
    ``loaded`` (loaded and answered correctly).
    """
    rng = np.random.default_rng(seed)
    originals = {k: make_original(k, folder).read_bytes() for k in kinds}
    counts: Counter = Counter()
    target = folder / "mutated.gsu"
    for i in range(n_files):
        kind = kinds[i % len(kinds)]
        data, what = mutate(originals[kind], rng)
        target.write_bytes(data)
        mmap = bool(rng.integers(2))
        try:
            obj = load_any(kind, target, mmap=mmap)
        except IndexFileError as e:
            msg = str(e)
            assert "\n" not in msg and str(target) in msg, f"file {i} ({kind}: {what}): error is not one line naming the file: {msg!r}"
            counts[(kind, "refused")] += 1
            continue
        except Exception as e:
            raise AssertionError(f"file {i} ({kind}: {what}, mmap={mmap}): load raised {type(e).__name__}: {e}") from e
        try:
            use(kind, obj, rng)
        except IndexFileError as e:  # an index opened with mmap=True checks its values on first use
            msg = str(e)
            assert mmap and "\n" not in msg and str(target) in msg, f"file {i} ({kind}: {what}): first use raised {msg!r}"
            counts[(kind, "refused")] += 1
            continue
        except Exception as e:
            raise AssertionError(f"file {i} ({kind}: {what}, mmap={mmap}): loaded, then {type(e).__name__}: {e}") from e
        counts[(kind, "loaded")] += 1
        if log is not None and (i + 1) % 200 == 0:
            log(f"{i + 1} files")
    return counts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--dir", default="/tmp/gsu-fuzz")
    a = ap.parse_args()
    folder = Path(a.dir)
    folder.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    counts = run(a.files, a.seed, folder, log=lambda s: print(s, flush=True))
    print(json.dumps({"files": a.files, "seed": a.seed, "seconds": round(time.time() - t0, 1),
                      "by_kind": {k: {o: counts[(k, o)] for o in ("refused", "loaded")} for k in ALL_KINDS},
                      "refused": sum(v for (k, o), v in counts.items() if o == "refused"),
                      "loaded": sum(v for (k, o), v in counts.items() if o == "loaded")}))


if __name__ == "__main__":
    main()
