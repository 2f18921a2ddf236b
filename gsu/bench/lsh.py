"""Suite ``lsh``: ETA's Hamming top-k and SDIM's bucket lookup against exact attention.

One request = one user with L behaviors (L = 1,000 / 10,000 / 100,000), T targets
(default 1,024), d = 64, k = 100, on ``threads`` threads (default 1). Measured side by
side in one process, per request:

- ``exact-torch``: gather the behavior embeddings, inner products in blocks of 64
  targets (``torch.matmul``) and ``torch.topk`` — the reference;
- ``exact-numpy``: the same with numpy matmul + ``argpartition`` + sort of the k;
- ``exact-attention-torch``: full softmax attention over the whole sequence (what SDIM
  approximates): matmul, softmax, matmul;
- ``eta-<m>``: ETA with behavior codes precomputed per *item* (offline hashing of the
  item table, as ETA does): per request, gather the L codes by item id, hash the T
  targets, and run :func:`gsu.index.hamming_topk`; recall@k against the exact
  inner-product top-k (ann-benchmarks tie tolerance, on recomputed scores);
- ``sdim``: :class:`gsu.retrieval.BehaviorSequenceEncoder` tables built offline; per
  request, :meth:`aggregate` (hash the targets, m/τ lookups each); the cosine between
  SDIM's vector and the exact softmax-attention vector over the whole sequence
  (temperature ``attn_temperature`` on unit-norm embeddings), next to the cosine of
  plain mean pooling (a baseline that ignores the target);
- offline encoding throughput of the BSE for many users at once: hashing the item table
  (items / s, once per table), building tables from item ids with those item signatures
  (``fit_items``: one gather + scatter pass, behaviors / s), and from raw behavior
  embeddings (``fit``: every behavior hashed, then scattered, behaviors / s).

Data: a clustered catalog (``gsu.datasets.synthetic.clustered_catalog`` when present,
unit-norm); a user's sequence draws 80% of its items from 4 interest clusters and 20%
uniformly; half of the targets come from the user's interests, half are uniform.

Writes ``lsh.jsonl`` and ``lsh.png`` (ms per request vs L) into ``out_dir`` and prints
a table plus the ratios of the issue's "Done when".
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from gsu.bench import harness
from gsu.index import SimHashIndex, hamming_topk
from gsu.retrieval.bse import BehaviorSequenceEncoder

log = logging.getLogger(__name__)

__all__ = ["run"]

_TORCH_BLOCK = 64  # targets per matmul block for the exact references (fastest of 64/256/1024 here)


def _catalog(n: int, dim: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    try:
        from gsu.datasets.synthetic import clustered_catalog

        cat = clustered_catalog(n, dim, n_clusters=256, seed=seed)
        return np.ascontiguousarray(cat.vectors, np.float32), np.asarray(cat.labels, np.int64)
    except ImportError:  # the generator module is optional for this suite
        rng = np.random.default_rng(seed)
        centers = rng.standard_normal((256, dim)).astype(np.float32)
        centers /= np.linalg.norm(centers, axis=1, keepdims=True)
        labels = rng.integers(0, 256, n)
        x = centers[labels] + 0.6 / np.sqrt(dim) * rng.standard_normal((n, dim)).astype(np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        return x.astype(np.float32), labels


def _user(rng: np.random.Generator, labels: np.ndarray, by_label: list[np.ndarray], L: int, T: int) -> tuple[np.ndarray, np.ndarray]:
    """(behavior item ids (L,), target item ids (T,)): 80% / 50% from 4 interest clusters."""
    n = labels.shape[0]
    interests = rng.choice(len(by_label), size=4, replace=False)
    interests = [c for c in interests if by_label[c].size] or [int(labels[0])]

    def draw(m: int, share: float) -> np.ndarray:
        own = rng.random(m) < share
        out = rng.integers(0, n, m)
        pick = rng.integers(0, len(interests), m)
        for j, c in enumerate(interests):
            sel = own & (pick == j)
            out[sel] = by_label[c][rng.integers(0, by_label[c].size, int(sel.sum()))]
        return out.astype(np.int64)

    return draw(L, 0.8), draw(T, 0.5)


def _exact_torch(E_t, items_t, tq_t, k: int):
    import torch

    beh = E_t.index_select(0, items_t)
    T = tq_t.shape[0]
    kk = min(k, beh.shape[0])
    pos = torch.empty((T, kk), dtype=torch.int64)
    val = torch.empty((T, kk), dtype=torch.float32)
    for s in range(0, T, _TORCH_BLOCK):
        v, i = torch.topk(tq_t[s : s + _TORCH_BLOCK] @ beh.T, kk, dim=1)
        pos[s : s + _TORCH_BLOCK] = i
        val[s : s + _TORCH_BLOCK] = v
    return pos, val


def _exact_numpy(E: np.ndarray, items: np.ndarray, tq: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    beh = E[items]
    T = tq.shape[0]
    kk = min(k, beh.shape[0])
    pos = np.empty((T, kk), np.int64)
    val = np.empty((T, kk), np.float32)
    for s in range(0, T, _TORCH_BLOCK):
        sc = tq[s : s + _TORCH_BLOCK] @ beh.T
        part = np.argpartition(-sc, kk - 1, axis=1)[:, :kk] if kk < sc.shape[1] else np.broadcast_to(np.arange(kk), sc.shape)
        pv = np.take_along_axis(sc, part, axis=1)
        o = np.argsort(-pv, axis=1, kind="stable")
        pos[s : s + _TORCH_BLOCK] = np.take_along_axis(part, o, axis=1)
        val[s : s + _TORCH_BLOCK] = np.take_along_axis(pv, o, axis=1)
    return pos, val


def _attention_torch(E_t, items_t, tq_t, temperature: float):
    import torch

    beh = E_t.index_select(0, items_t)
    out = torch.empty_like(tq_t)
    for s in range(0, tq_t.shape[0], _TORCH_BLOCK):
        w = torch.softmax((tq_t[s : s + _TORCH_BLOCK] @ beh.T) / temperature, dim=1)
        out[s : s + _TORCH_BLOCK] = w @ beh
    return out


def _cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    na = np.linalg.norm(a, axis=1)
    nb = np.linalg.norm(b, axis=1)
    return (a * b).sum(1) / np.maximum(na * nb, 1e-30)


def _popcount_rows(x: np.ndarray) -> np.ndarray:
    return np.unpackbits(np.ascontiguousarray(x).view(np.uint8), axis=-1).sum(-1)


def run(
    *,
    out_dir: Path,
    quick: bool = False,
    threads: int = 1,
    lengths: tuple[int, ...] | None = None,
    n_targets: int | None = None,
    dim: int = 64,
    k: int = 100,
    eta_bits: tuple[int, ...] | None = None,
    n_hashes: int = 48,
    tau: int = 3,
    attn_temperature: float = 0.5,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Run the suite; write ``lsh.jsonl`` and ``lsh.png`` into ``out_dir``; return the records.

    Args:
        lengths: sequence lengths L (default 1,000 / 10,000 / 100,000; quick: 1,000 / 10,000).
        n_targets: T targets per request (default 1,024; quick: 256).
        eta_bits: ETA code lengths m to measure (default 64, 128, 256; quick: 64).
        n_hashes, tau: SDIM's m and τ (SDIM §3).
        attn_temperature: temperature of the exact softmax attention SDIM is compared with
            (on unit-norm embeddings; 0.5 ≈ the slope of SDIM's (1 − θ/π)^τ kernel at
            θ = π/2 for τ = 3).
    """
    import torch

    out_dir = Path(out_dir)
    pinned = harness.pin_threads(threads)
    machine = harness.machine_info()
    lengths = tuple(lengths or ((1_000, 10_000) if quick else (1_000, 10_000, 100_000)))
    T = int(n_targets or (256 if quick else 1024))
    eta_bits = tuple(eta_bits or ((64,) if quick else (64, 128, 256)))
    repeats = 3 if quick else 5
    n_items = 50_000 if quick else 200_000
    rng = np.random.default_rng(seed)

    E, labels = _catalog(n_items, dim, seed)
    by_label = [np.flatnonzero(labels == c) for c in range(int(labels.max()) + 1)]
    E_t = torch.from_numpy(E)

    # offline: item codes for every ETA code length (ETA hashes the embedding table once)
    hashers = {m: SimHashIndex(dim, m, seed=seed + m) for m in eta_bits}
    item_codes = {}
    for m, h in hashers.items():
        t0 = time.perf_counter()
        item_codes[m] = h.encode(E)
        log.info("hashed %d items with m=%d in %.2fs", n_items, m, time.perf_counter() - t0)

    base = {"suite": "lsh", "T": T, "dim": dim, "k": k, "threads": threads, "pinned": pinned}
    records: list[dict[str, Any]] = []

    for L in lengths:
        items, targets = _user(rng, labels, by_label, L, T)
        tq = np.ascontiguousarray(E[targets])
        items_t = torch.from_numpy(items)
        tq_t = torch.from_numpy(tq)
        beh = E[items]

        # exact references
        tpos, tval = _exact_torch(E_t, items_t, tq_t, k)
        true_pos, true_val = tpos.numpy(), tval.numpy()
        t_torch = harness.time_call(lambda: _exact_torch(E_t, items_t, tq_t, k), repeats=repeats)
        npos, nval = _exact_numpy(E, items, tq, k)
        rec_np = harness.recall_at_k(npos, true_pos, found_scores=np.einsum("td,tkd->tk", tq, beh[npos]), true_scores=true_val)
        t_numpy = harness.time_call(lambda: _exact_numpy(E, items, tq, k), repeats=repeats)
        attn = _attention_torch(E_t, items_t, tq_t, attn_temperature).numpy()
        t_attn = harness.time_call(lambda: _attention_torch(E_t, items_t, tq_t, attn_temperature), repeats=repeats)
        ref_ms = t_torch.median_s * 1e3
        for name, t, extra in (
            ("exact-torch", t_torch, {"recall": 1.0}),
            ("exact-numpy", t_numpy, {"recall": rec_np}),
            ("exact-attention-torch", t_attn, {}),
        ):
            records.append({**base, "method": name, "L": L, "ms_per_request": t.median_s * 1e3, "p50_ms": t.p50_ms,
                            "p99_ms": t.p99_ms, "speedup_vs_torch": ref_ms / (t.median_s * 1e3), **extra})

        # ETA: codes per item gathered by behavior id; encode targets; Hamming top-k
        for m in eta_bits:
            h, codes_all = hashers[m], item_codes[m]

            def eta(h=h, codes_all=codes_all, m=m):
                return hamming_topk(h.encode(tq), codes_all[items], k, n_bits=m)

            pos, dist = eta()
            # trust nothing: distances recomputed from the codes, positions unique
            chk = slice(0, min(T, 32))
            hc = codes_all[items]
            qc = h.encode(tq[chk])
            harness.check_results(
                pos[chk], -dist[chk].astype(np.float32),
                recompute=lambda qi, r: -_popcount_rows(qc[qi] ^ hc[r]).astype(np.float64), name=f"eta-{m}",
            )
            found_scores = np.einsum("td,tkd->tk", tq, beh[np.maximum(pos, 0)])
            rec = harness.recall_at_k(pos, true_pos, found_scores=found_scores, true_scores=true_val)
            t_eta = harness.time_call(eta, repeats=repeats)
            records.append({**base, "method": f"eta-{m}", "n_bits": m, "L": L, "ms_per_request": t_eta.median_s * 1e3,
                            "p50_ms": t_eta.p50_ms, "p99_ms": t_eta.p99_ms, "recall": rec,
                            "speedup_vs_torch": ref_ms / (t_eta.median_s * 1e3)})

        # SDIM: offline tables for this user, per-request lookup
        enc = BehaviorSequenceEncoder(dim, n_hashes=n_hashes, tau=tau, seed=seed)
        t0 = time.perf_counter()
        enc.fit_items(E, items, np.array([0, L], np.int64))
        fit_s = time.perf_counter() - t0
        vec, mask = enc.aggregate(0, tq)
        t_sdim = harness.time_call(lambda: enc.aggregate(0, tq), repeats=25, warmup=3)  # sub-ms: more repeats
        cos = _cosine_rows(vec, attn)
        mean_vec = np.broadcast_to(beh.mean(0), attn.shape)
        cos_mean = _cosine_rows(mean_vec, attn)
        records.append({**base, "method": "sdim", "n_hashes": n_hashes, "tau": tau, "L": L,
                        "ms_per_request": t_sdim.median_s * 1e3, "p50_ms": t_sdim.p50_ms, "p99_ms": t_sdim.p99_ms,
                        "speedup_vs_torch": ref_ms / (t_sdim.median_s * 1e3),
                        "speedup_vs_attention": t_attn.median_s / t_sdim.median_s,
                        "cosine_vs_attention": float(cos.mean()), "cosine_vs_attention_p10": float(np.percentile(cos, 10)),
                        "cosine_mean_pooling": float(cos_mean.mean()), "nonempty_bucket_share": float(mask.mean()),
                        "attn_temperature": attn_temperature, "offline_fit_s": fit_s})
        log.info("L=%d done", L)

    records += _encoding_throughput(E, rng, n_hashes=n_hashes, tau=tau, seed=seed, quick=quick, base=base)
    for r in records:
        r["machine"] = machine

    harness.write_jsonl(out_dir / "lsh.jsonl", records)
    harness.line_plot([r for r in records if "L" in r and r.get("ms_per_request")], out_dir / "lsh.png", x="L",
                      y="ms_per_request", group="method", xlabel="history length L (behaviors)", ylabel="latency per request (ms)",
                      title=f"one request: T={T} targets, d={dim}, k={k}, {threads} thread(s)")
    _print(records, lengths)
    return records


def _encoding_throughput(E: np.ndarray, rng: np.random.Generator, *, n_hashes: int, tau: int, seed: int, quick: bool,
                         base: dict[str, Any]) -> list[dict[str, Any]]:
    """BSE over many users at once: behaviors per second from item ids and from raw embeddings."""
    n_users, per_user = (50, 4_000) if quick else (200, 10_000)
    N = n_users * per_user
    items = rng.integers(0, E.shape[0], N).astype(np.int64)
    indptr = np.arange(0, N + 1, per_user, dtype=np.int64)
    dim = E.shape[1]
    enc = BehaviorSequenceEncoder(dim, n_hashes=n_hashes, tau=tau, seed=seed)
    enc.fit_items(E, items[: 2 * per_user], indptr[:3])  # warm-up (compilation)
    t_hash = harness.time_call(lambda: enc.signatures(E), repeats=3, warmup=1)
    item_sig = enc.signatures(E)
    t_items = harness.time_call(lambda: enc.fit_items(E, items, indptr, item_signatures=item_sig), repeats=3, warmup=0)
    n_raw = min(N, 100_000 if quick else 500_000)
    raw = np.ascontiguousarray(E[items[:n_raw]])
    ip_raw = np.arange(0, n_raw + 1, per_user, dtype=np.int64)
    if ip_raw[-1] != n_raw:
        ip_raw = np.append(ip_raw, n_raw)
    enc.fit(raw[: 2 * per_user], ip_raw[:3])
    t_raw = harness.time_call(lambda: enc.fit(raw, ip_raw), repeats=3, warmup=0)
    return [
        {**base, "method": "bse-hash-items", "n_hashes": n_hashes, "tau": tau, "items": E.shape[0],
         "seconds": t_hash.median_s, "items_per_s": E.shape[0] / t_hash.median_s},
        {**base, "method": "bse-encode-items", "n_hashes": n_hashes, "tau": tau, "behaviors": N, "users": n_users,
         "seconds": t_items.median_s, "behaviors_per_s": N / t_items.median_s},
        {**base, "method": "bse-encode-embeddings", "n_hashes": n_hashes, "tau": tau, "behaviors": n_raw,
         "users": ip_raw.shape[0] - 1, "seconds": t_raw.median_s, "behaviors_per_s": n_raw / t_raw.median_s},
    ]


def _print(records: list[dict[str, Any]], lengths: tuple[int, ...]) -> None:
    rows = [r for r in records if "L" in r]
    print(harness.format_table(rows, ["method", "L", "ms_per_request", "p99_ms", "speedup_vs_torch", "recall",
                                      "cosine_vs_attention", "cosine_mean_pooling"]))
    enc = [r for r in records if r["method"].startswith("bse-encode")]
    print(harness.format_table([r for r in records if r["method"].startswith("bse-")],
                               ["method", "n_hashes", "tau", "items", "behaviors", "users", "seconds", "items_per_s", "behaviors_per_s"]))
    Lmax, Lmin = max(lengths), min(lengths)

    def get(method: str, L: int) -> dict[str, Any] | None:
        return next((r for r in rows if r["method"] == method and r["L"] == L), None)

    print(f"Done-when checks at L={Lmax:,} (one request, timings side by side in this run):")
    eta = sorted((r for r in rows if r["method"].startswith("eta-") and r["L"] == Lmax), key=lambda r: r["n_bits"])
    for r in eta:
        ok = "PASS" if r["speedup_vs_torch"] >= 5 else "FAIL"
        print(f"  ETA m={r['n_bits']}: {r['speedup_vs_torch']:.1f}x faster than exact torch matmul+topk "
              f"(goal >= 5x: {ok}), recall@{r['k']} = {r['recall']:.3f}")
    s_hi, s_lo = get("sdim", Lmax), get("sdim", Lmin)
    if s_hi and s_lo:
        ok = "PASS" if s_hi["speedup_vs_torch"] >= 50 else "FAIL"
        growth = s_hi["ms_per_request"] / s_lo["ms_per_request"]
        flat = "PASS" if growth <= 1.5 else "FAIL"
        print(f"  SDIM lookup: {s_hi['speedup_vs_torch']:.0f}x faster than exact torch top-k, "
              f"{s_hi['speedup_vs_attention']:.0f}x than exact attention (goal >= 50x: {ok}); "
              f"time at L={Lmax:,} / L={Lmin:,} = {growth:.2f} (flat in L, <= 1.5: {flat})")
    for r in enc:
        ok = "PASS" if r["behaviors_per_s"] >= 4e6 else "FAIL"
        print(f"  {r['method']}: {r['behaviors_per_s'] / 1e6:.2f} M behaviors/s on {r['threads']} thread(s) "
              f"(m={r['n_hashes']}, tau={r['tau']}, d={r['dim']}; goal >= 4 M/s/core: {ok})")
