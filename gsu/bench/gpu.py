"""Suite ``gpu``: exact GSU on a torch device — gsu's fused top-k against torch matmul + topk.

Runs on whatever device exists: CUDA when torch sees a GPU, else the CPU through torch
(the output and every record say which; CPU-torch numbers are never GPU numbers).

One request = one user with L behaviors (L = 10,000 / 100,000 / 1,000,000 on a GPU;
10,000 / 100,000 on the CPU, where L = 1M costs seconds per call), T targets (default
1,024), d = 64, k = 100. Measured side by side in one process, per request and for
``users`` requests batched in one call (default 64 on a GPU, 8 on the CPU):

- ``torch-matmul-topk``: the peer — ``Q @ K.T`` in the scoring format (bf16 on a GPU,
  float32 on the CPU) and ``torch.topk``; the (T, L) score matrix is materialised (in
  blocks of targets that keep it under 1 GiB); no tie rule, no time cut;
- ``gsu-fused``: :func:`gsu.device.fused_topk` — low-precision scores + chunk maxima,
  float32 rescoring of the candidates, certified exact top-k under the tie rule (the more
  recent behavior wins ties); the (T, L) matrix is never stored (on CUDA with Triton both
  passes are Triton kernels, ``kernel`` in the record);
- ``gsu-fused-cuts``: the same with a random time cut per target (applied in the tiles);
- ``gsu-fused-torch`` (CUDA with Triton only): the same with the tiled torch passes, for
  comparison;
- ``gsu-exact-retrieve`` (per request only): ``Exact(items, device=...).retrieve`` — the
  user-facing call, with the history gather and the host ↔ device copies.

Every fused result is compared with the CPU path (:func:`gsu.retrieval.methods.history_topk`,
numba) on the same data: ``ids_equal`` is the fraction of identical ids (near-ties one
float32 ulp apart may swap between two summation orders), ``max_score_diff`` the largest
score difference. Threads are pinned (``threads``); each timing is the median of
``repeats`` after a warm-up, synchronised on CUDA.

Writes ``gpu.jsonl`` and ``gpu.png`` (targets/s vs L) into ``out_dir``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from gsu.bench import harness

log = logging.getLogger(__name__)

__all__ = ["run"]

#: bytes of one materialised score block of the torch peer
_PEER_BLOCK_BYTES = 1 << 30


def _data(n_items: int, dim: int, seed: int) -> np.ndarray:
    """(n_items, dim) float32 unit vectors around 256 cluster centres."""
    rng = np.random.default_rng(seed)
    c = rng.standard_normal((256, dim)).astype(np.float32)
    x = c[rng.integers(0, 256, n_items)] + 0.5 * rng.standard_normal((n_items, dim)).astype(np.float32)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _peer(Q: Any, Kl: Any, k: int) -> Any:
    """torch matmul + topk over (G, T, D) × (G, L, D), in target blocks under 1 GiB.
    ``Kl`` is already in the scoring format (converted once, outside the timing, as a
    user of torch would keep it); the queries are converted per call."""
    import torch

    G, T, _ = Q.shape
    L = Kl.shape[1]
    dtype = Kl.dtype
    esz = torch.finfo(dtype).bits // 8
    blk = max(1, min(T, _PEER_BLOCK_BYTES // max(G * L * esz, 1)))
    Ql, Kt = Q.to(dtype), Kl.transpose(1, 2)
    out = []
    with torch.no_grad():
        for s in range(0, T, blk):
            S = torch.bmm(Ql[:, s : s + blk], Kt)
            out.append(torch.topk(S, min(k, L), dim=-1).indices)
    return torch.cat(out, dim=1)


def run(
    *,
    out_dir: Path,
    quick: bool = False,
    threads: int = 1,
    device: str | None = None,
    lengths: tuple[int, ...] | None = None,
    n_targets: int | None = None,
    users: int | None = None,
    dim: int = 64,
    k: int = 100,
    repeats: int = 3,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Run the suite; write ``gpu.jsonl`` and ``gpu.png``; return the records.

    Args:
        device: torch device (default ``"cuda"`` when available, else ``"cpu"``).
        lengths: L values (default: 10K/100K/1M on CUDA, 10K/100K on the CPU; quick: 10K).
        n_targets: T (default 1,024; quick: 256).
        users: requests batched per call (default 64 on CUDA, 8 on the CPU; quick: 4).
        dim, k: d and k; repeats: timed repeats (median reported).
    """
    import torch

    from gsu.device import TopkStats, fused_topk, prepare_keys, resolve_device, sync
    from gsu.device import triton_available as tri_available
    from gsu.retrieval import Exact, History, ItemTable
    from gsu.retrieval.methods import history_topk

    out_dir = Path(out_dir)
    pinned = harness.pin_threads(threads)
    machine = harness.machine_info()
    dev = resolve_device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    cuda = dev.type == "cuda"
    dev_name = torch.cuda.get_device_name(dev) if cuda else f"cpu (torch, {torch.get_num_threads()} thread(s)) — no GPU measured"
    if not cuda:
        print("gpu suite: no CUDA GPU visible to torch — running the device paths on the CPU through torch; "
              "these are CPU numbers, not GPU numbers", flush=True)
    else:
        print(f"gpu suite: device {dev} = {dev_name}", flush=True)
    if lengths is None:
        lengths = (10_000,) if quick else ((10_000, 100_000, 1_000_000) if cuda else (10_000, 100_000))
    T = n_targets or (256 if quick else 1024)
    G = users or (4 if quick else (64 if cuda else 8))
    peer_dtype = torch.bfloat16 if cuda else torch.float32
    n_items = max(lengths) + T
    E = _data(n_items, dim, seed)
    items = ItemTable(embeddings=E)
    rng = np.random.default_rng(seed + 1)
    base = dict(suite="gpu", device=str(dev), device_name=dev_name, gpu=cuda, T=T, d=dim, k=k,
                threads=threads, pinned=pinned, machine=machine)
    records: list[dict[str, Any]] = []

    def timed(fn: Any) -> harness.Timing:
        def call() -> None:
            fn()
            sync(dev)

        return harness.time_call(call, repeats=repeats, warmup=1)

    def rec(method: str, L: int, n_users: int, t: harness.Timing, **extra: Any) -> None:
        r = dict(base, method=method, L=L, users=n_users, median_s=t.median_s, repeats=t.repeats,
                 targets_per_s=n_users * T / t.median_s, **extra)
        records.append(r)
        print(f"  L={L:>9,} users={n_users:>3} {method:<20} {t.median_s * 1e3:10.2f} ms  {r['targets_per_s']:12,.0f} targets/s"
              + "".join(f"  {a}={b}" for a, b in extra.items()), flush=True)

    for L in lengths:
        for n_users in (1, G):
            hist = rng.integers(T, n_items, (n_users, L))
            tgt = rng.integers(0, n_items, (n_users, T))
            cuts = rng.integers(1, L + 1, (n_users, T))
            Qn, Kn = E[tgt], E[hist]
            Q = torch.from_numpy(Qn).to(dev)
            K = torch.from_numpy(Kn).to(dev)
            keys = prepare_keys(K)
            hi = torch.from_numpy(cuts).to(dev)
            Kp = K.to(peer_dtype)
            rec("torch-matmul-topk", L, n_users, timed(lambda: _peer(Q, Kp, k)), precision=str(peer_dtype).split(".")[-1])
            del Kp
            variants = [("gsu-fused", None, "auto"), ("gsu-fused-cuts", hi, "auto")]
            if cuda and tri_available(dev):
                variants.append(("gsu-fused-torch", None, "torch"))  # pass 1 in torch ops, for comparison
            for method, h, kern in variants:
                st = TopkStats()
                c, s = fused_topk(Q, keys, k, tie="high", hi=h, stats=st, kernel=kern)
                c, s = c.cpu().numpy(), s.cpu().numpy()
                # the CPU path on the first user of the batch (numba, ties to the more recent behavior)
                ci, si = history_topk(Qn[0], Kn[0], k, np.full(T, L, np.int64) if h is None else cuts[0].astype(np.int64))
                eq = float((c[0] == ci).mean())
                diff = float(np.nanmax(np.abs(np.where(np.isfinite(si), s[0] - si, 0.0))))
                t = timed(lambda h=h, kern=kern: fused_topk(Q, keys, k, tie="high", hi=h, kernel=kern))
                rec(method, L, n_users, t, precision=st.precision, kernel=st.kernel, ids_equal=eq, max_score_diff=diff,
                    retried_rows=st.retried, candidates=st.candidates)
            if n_users == 1:
                m = Exact(items, k=k, device=str(dev))
                hh = History.from_arrays(hist[0], np.arange(L))
                cpu_r = Exact(items, k=k).retrieve(hh, tgt[0])
                got = m.retrieve(hh, tgt[0])
                eq = float((got.positions == cpu_r.positions).mean())
                rec("gsu-exact-retrieve", L, 1, timed(lambda: m.retrieve(hh, tgt[0])), ids_equal=eq)
            del Q, K, keys, hi
            if cuda:
                torch.cuda.empty_cache()
    out_dir.mkdir(parents=True, exist_ok=True)
    harness.write_jsonl(out_dir / "gpu.jsonl", records)
    plot = [dict(r, series=f"{r['method']} ×{r['users']}") for r in records]
    harness.line_plot(plot, out_dir / "gpu.png", x="L", y="targets_per_s", group="series",
                      xlabel="history length L (behaviors)", ylabel="targets / s",
                      title=f"exact GSU top-{k}, T={T}, d={dim} on {dev_name}")
    print(harness.format_table(records, ["method", "L", "users", "median_s", "targets_per_s", "precision", "ids_equal", "max_score_diff"]))
    for L in lengths:
        for n_users in (1, G):
            p = [r for r in records if r["L"] == L and r["users"] == n_users]
            peer = next(r for r in p if r["method"] == "torch-matmul-topk")
            fused = next(r for r in p if r["method"] == "gsu-fused")
            print(f"L={L:,} users={n_users}: gsu-fused / torch-matmul-topk = {fused['targets_per_s'] / peer['targets_per_s']:.2f}x on {dev_name}")
    return records
