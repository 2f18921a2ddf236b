"""The device paths (gsu.device): run on the CPU through torch (``device="cpu"``) and
compared with the numba / numpy paths — ids equal, scores within float32 rounding —
including heavy ties, time cuts, every filter form and many users per call. The same
checks run on CUDA when a GPU is present; without one they skip, saying so."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gsu.device import TopkStats, choose_precision, error_coef, fused_topk, resolve_device, select_topk
from gsu.index.device import FaissCandidates, faiss_gpu_available
from gsu.index import Filter, FlatIndex
from gsu.retrieval import TWIN, BehaviorStore, Exact, History, ItemTable, SimHashTopK, SoftSearch, retrieve_batch

CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason="no CUDA GPU visible to torch: the CUDA runs of the device paths need a GPU machine")
DEVICES = ["cpu", pytest.param("cuda", marks=needs_cuda)]


# ----------------------------------------------------------------------------- references
def ref_topk(S: np.ndarray, k: int, tie: str, visible: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Top-k columns of each row of S (B, N) by (score desc, tie), numpy lexsort."""
    B, N = S.shape
    oc = np.full((B, k), -1, np.int64)
    os_ = np.full((B, k), -np.inf, np.float32)
    cols = np.arange(N)
    for b in range(B):
        ok = np.ones(N, bool) if visible is None else visible[b].copy()
        ok &= ~np.isnan(S[b]) & (S[b] > -np.inf)
        c, s = cols[ok], S[b, ok]
        o = np.lexsort((c if tie == "low" else -c, -s))[:k]
        oc[b, : o.size], os_[b, : o.size] = c[o], s[o]
    return oc, os_


def _t(x: np.ndarray, device: str) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x)).to(device)


# ----------------------------------------------------------------------------- the kernel
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
@pytest.mark.parametrize("tie", ["low", "high"])
def test_fused_topk_heavy_ties_cuts_and_mask(device, precision, tie):
    """Small integers: most scores tie; the answer must follow the tie rule exactly."""
    rng = np.random.default_rng(hash((precision, tie)) % 2**32)
    for N, B, k in ((1, 3, 5), (37, 9, 40), (2500, 33, 25), (6000, 17, 100)):
        Q = rng.integers(-2, 3, (B, 8)).astype(np.float32)
        K = rng.integers(-2, 3, (N, 8)).astype(np.float32)
        hi = rng.integers(0, N + 1, B)
        hi[0] = 0
        mask = rng.random(N) < 0.7
        st = TopkStats()
        c, s = fused_topk(_t(Q, device), _t(K, device), k, tie=tie, hi=_t(hi, device)[None], mask=_t(mask, device)[None, None],
                          precision=precision, stats=st, workspace_bytes=1 << 16)
        vis = (np.arange(N)[None, :] < hi[:, None]) & mask[None, :]
        rc, rs = ref_topk(Q @ K.T, k, tie, vis)
        np.testing.assert_array_equal(c.cpu().numpy(), rc)
        np.testing.assert_array_equal(s.cpu().numpy(), rs)  # small integers: exact in float32
        assert st.precision == precision and st.rows == B


@pytest.mark.parametrize("device", DEVICES)
def test_fused_topk_all_equal_scores_take_the_second_round(device):
    """Every score equal: no chunk can be ruled out, so rows are rescored with every chunk."""
    N, k = 4000, 30
    Q = np.ones((5, 4), np.float32)
    K = np.ones((N, 4), np.float32)
    for tie, want in (("low", np.arange(k)), ("high", np.arange(N - 1, N - 1 - k, -1))):
        st = TopkStats()
        c, s = fused_topk(_t(Q, device), _t(K, device), k, tie=tie, precision="bf16", stats=st)
        np.testing.assert_array_equal(c.cpu().numpy(), np.tile(want, (5, 1)))
        assert np.all(s.cpu().numpy() == 4.0)
        assert st.retried == 5


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_fused_topk_random_floats_equal_numpy(device, precision):
    """Clustered unit vectors (many near-ties at the bf16 level): the float64 answer up to
    float32 rounding."""
    rng = np.random.default_rng(5)
    centers = rng.standard_normal((8, 32))
    K = (centers[rng.integers(0, 8, 20000)] + 0.3 * rng.standard_normal((20000, 32))).astype(np.float32)
    K /= np.linalg.norm(K, axis=1, keepdims=True)
    Q = K[rng.integers(0, 20000, 64)] + 0.01 * rng.standard_normal((64, 32)).astype(np.float32)
    st = TopkStats()
    c, s = fused_topk(_t(Q, device), _t(K, device), 50, tie="high", precision=precision, stats=st)
    S64 = Q.astype(np.float64) @ K.T.astype(np.float64)
    rc, rs = ref_topk(S64, 50, "high")
    assert_same_up_to_rounding(c.cpu().numpy(), s.cpu().numpy(), rc, rs, S64)


def assert_same_up_to_rounding(c, s, rc, rs, S64, tol=2e-6):
    """Rank by rank the same float64 scores (within float32 rounding); ids equal wherever
    the reference's score is more than ``tol`` away from every other score of the row
    (near-ties within rounding may swap between two float32 summation orders)."""
    np.testing.assert_allclose(np.take_along_axis(S64, c, 1), rs, rtol=0, atol=tol)
    np.testing.assert_allclose(s, rs, rtol=0, atol=tol)
    for b in range(c.shape[0]):
        row = np.sort(S64[b])
        gap = np.minimum(np.abs(rs[b] - row[np.searchsorted(row, rs[b]) - 1]), np.abs(row[np.minimum(np.searchsorted(row, rs[b], "right"), row.size - 1)] - rs[b]))
        sep = gap > tol
        np.testing.assert_array_equal(c[b][sep], rc[b][sep])
    assert (c == rc).mean() > 0.99


@pytest.mark.parametrize("device", DEVICES)
def test_fused_topk_groups_heads_and_column_keys(device):
    """G groups at once (users), max over heads, and a per-column key compared with the cut."""
    rng = np.random.default_rng(11)
    G, B, N, D, H, k = 4, 6, 700, 12, 3, 15
    Q = rng.integers(-2, 3, (G, B, D)).astype(np.float32)
    K = rng.integers(-2, 3, (G, N, D)).astype(np.float32)
    hi = rng.integers(0, 400, (G, B))
    ck = rng.integers(0, 400, (G, N))
    c, s = fused_topk(_t(Q, device), _t(K, device), k, tie="high", hi=_t(hi, device), col_key=_t(ck, device), n_heads=H, precision="bf16")
    dh = D // H
    for g in range(G):
        S = np.max([Q[g][:, h * dh : (h + 1) * dh] @ K[g][:, h * dh : (h + 1) * dh].T for h in range(H)], axis=0)
        rc, rs = ref_topk(S, k, "high", ck[g][None, :] < hi[g][:, None])
        np.testing.assert_array_equal(c[g].cpu().numpy(), rc)
        np.testing.assert_array_equal(s[g].cpu().numpy(), rs)


def test_fused_topk_never_returns_nan_and_pads():
    Q = np.ones((2, 3), np.float32)
    K = np.array([[1, 1, 1], [np.nan, 0, 0], [2, 2, 2]], np.float32)
    c, s = fused_topk(torch.from_numpy(Q), torch.from_numpy(K), 5, tie="low", precision="bf16")
    np.testing.assert_array_equal(c.numpy(), [[2, 0, -1, -1, -1]] * 2)
    assert np.all(np.isneginf(s.numpy()[:, 2:]))
    cc, ss = select_topk(torch.tensor([[np.nan, -np.inf, 1.0]]), torch.tensor([[0, 1, 2]]), 2, tie="low")
    np.testing.assert_array_equal(cc.numpy(), [[2, -1]])
    # -0.0 and 0.0 tie (as on the CPU): the smaller column wins
    cc, _ = select_topk(torch.tensor([[0.0, -0.0]]), torch.tensor([[5, 3]]), 1, tie="low")
    assert cc.item() == 3


def test_bad_input_is_a_clear_error():
    with pytest.raises(ValueError, match="only 'cpu' and 'cuda'"):
        resolve_device("meta")
    with pytest.raises(ValueError, match="not a torch device"):
        resolve_device("gpu0")
    with pytest.raises(TypeError, match="device"):
        resolve_device(3)
    if not CUDA:
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda")
    with pytest.raises(ValueError, match="tie"):
        fused_topk(torch.ones(2, 3), torch.ones(4, 3), 1, tie="newest")
    with pytest.raises(ValueError, match="precision"):
        fused_topk(torch.ones(2, 3), torch.ones(4, 3), 1, tie="low", precision="int8")
    with pytest.raises(ValueError, match="fp16"):
        choose_precision("fp16", torch.device("cpu"), 1e6)
    with pytest.raises(ValueError, match="do not match"):
        fused_topk(torch.ones(2, 3), torch.ones(4, 5), 1, tie="low")
    with pytest.raises(ValueError, match="float32"):
        fused_topk(torch.ones(2, 3, dtype=torch.float64), torch.ones(4, 3), 1, tie="low")
    assert choose_precision("auto", torch.device("cpu"), 1.0) == "fp32"
    assert 0 < error_coef("fp32", 64) < error_coef("fp16", 64) < error_coef("bf16", 64) < 0.02


# ----------------------------------------------------------------------------- FlatIndex
@pytest.fixture(scope="module")
def catalog():
    rng = np.random.default_rng(0)
    centers = rng.standard_normal((16, 24))
    x = (centers[rng.integers(0, 16, 3000)] + 0.4 * rng.standard_normal((3000, 24))).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    q = (centers[rng.integers(0, 16, 50)] + 0.4 * rng.standard_normal((50, 24))).astype(np.float32)
    ids = np.arange(3000, dtype=np.int64) * 3 + 7
    return x, q, ids


def _pair(x, ids, metric="ip", **kw):
    a = FlatIndex(x.shape[1], metric)
    a.add(x, ids)
    b = FlatIndex(x.shape[1], metric, **kw)
    b.add(x, ids)
    return a, b


def _same(got, want, near=None):
    """Equal ids, counts and scores (within float32 rounding). With ``near = (x, q, ids)``
    (float data) an id may differ from the CPU's only where the two are a near-tie: BLAS
    and torch sum in different orders, so scores one float32 ulp apart can swap; the
    float64 score of the id returned must then equal the CPU's score within rounding."""
    np.testing.assert_array_equal(got.counts, want.counts)
    np.testing.assert_allclose(got.scores, want.scores, rtol=1e-5, atol=1e-6)
    diff = got.ids != want.ids
    if near is None or not diff.any():
        np.testing.assert_array_equal(got.ids, want.ids)
        return
    x, q, ids = near
    row_of = {int(v): i for i, v in enumerate(ids)}
    for r, c in np.argwhere(diff):
        s64 = float(x[row_of[int(got.ids[r, c])]].astype(np.float64) @ q[r].astype(np.float64))
        assert abs(s64 - float(want.scores[r, c])) <= 2e-6 * max(1.0, abs(s64)), (r, c, s64, want.scores[r, c])
    assert diff.mean() < 0.01, f"{diff.sum()} of {diff.size} ids differ"


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("metric", ["ip", "cosine"])
@pytest.mark.parametrize("precision", ["auto", "bf16"])
def test_flat_every_filter_form_equals_cpu(catalog, device, metric, precision):
    x, q, ids = catalog
    cpu, dev = _pair(x, ids, metric, device=device, device_backend="torch", device_precision=precision)
    near = (cpu.vectors, cpu._prep_queries(q), ids)
    rng = np.random.default_rng(1)
    few = ids[rng.choice(3000, 40, replace=False)]
    many = ids[rng.choice(3000, 2000, replace=False)]
    per_q = [ids[rng.choice(3000, int(m), replace=False)] for m in rng.integers(0, 3000, q.shape[0])]
    per_q[3] = ids[:0]  # a query that allows nothing
    per_q[4] = ids[:5]  # fewer than k
    filters = [None, few, many, ids, Filter.range(ids[10], ids[600]), ~Filter.from_ids(few), per_q,
               Filter.per_query(per_q) & Filter.from_ids(many)]
    for f in filters:
        for k in (1, 10, 120):
            _same(dev.search(q, k, filter=f), cpu.search(q, k, filter=f), near)
    _same(dev.search(q[:1], 10, filter=[few]), cpu.search(q[:1], 10, filter=[few]), near)


@pytest.mark.parametrize("device", DEVICES)
def test_flat_heavy_ties_go_to_the_smaller_row(device):
    rng = np.random.default_rng(2)
    x = rng.integers(-1, 2, (5000, 6)).astype(np.float32)
    q = rng.integers(-1, 2, (20, 6)).astype(np.float32)
    ids = rng.permutation(10**6)[:5000].astype(np.int64)
    cpu, dev = _pair(x, ids, device=device, device_backend="torch", device_precision="bf16")
    per_q = [ids[rng.choice(5000, int(m), replace=False)] for m in rng.integers(1, 5000, 20)]
    for f in (None, ids[::7], ids[::2], per_q):
        _same(dev.search(q, 50, filter=f), cpu.search(q, 50, filter=f))


@pytest.mark.parametrize("device", DEVICES)
def test_flat_faiss_candidates_are_certified(catalog, device):
    """faiss brute force as the candidate generator (faiss-gpu on CUDA, faiss-cpu here):
    rescored and certified, so the answer is the CPU path's even under heavy ties."""
    x, q, ids = catalog
    if device == "cuda" and not faiss_gpu_available():
        # a CPU build of faiss on a GPU machine: a clear error, not an AttributeError
        with pytest.raises(ValueError, match="faiss with GPU support"):
            _pair(x, ids, device=device, device_backend="faiss")[1].search(q, 5)
        with pytest.raises(ValueError, match="faiss with GPU support"):
            FaissCandidates(x, torch.device(device))
        pytest.skip("faiss here is a CPU build: the faiss-gpu candidate path needs the gpu extra (the error was checked)")
    cpu, dev = _pair(x, ids, device=device, device_backend="faiss")
    for f in (None, ids[::4]):
        _same(dev.search(q, 20, filter=f), cpu.search(q, 20, filter=f))
    xi = np.ones((500, 4), np.float32)
    a, b = _pair(xi, np.arange(500, dtype=np.int64), device=device, device_backend="faiss")
    _same(b.search(np.ones((3, 4), np.float32), 7), a.search(np.ones((3, 4), np.float32), 7))
    fc = FaissCandidates(x, torch.device(device))
    s, r = fc.search(q[:2], 5)
    assert r.shape == (2, 5) and s.dtype == np.float32


def test_flat_device_is_a_runtime_setting(tmp_path, catalog):
    x, q, ids = catalog
    cpu = FlatIndex(x.shape[1])
    cpu.add(x, ids)
    cpu.save(tmp_path / "f.gsu")
    from gsu.index import load

    dev = load(tmp_path / "f.gsu")
    dev.device = "cpu"
    _same(dev.search(q, 9, filter=ids[::5]), cpu.search(q, 9, filter=ids[::5]))
    dev.add(np.ones((1, x.shape[1]), np.float32) * 3, [10**7])  # the device copy follows adds
    assert dev.search(np.ones(x.shape[1], np.float32), 1).ids[0, 0] == 10**7
    bad = FlatIndex(4, device="tpu")
    bad.add(np.ones((3, 4), np.float32))
    with pytest.raises(ValueError, match="not a torch device|only 'cpu' and 'cuda'"):
        bad.search(np.ones(4, np.float32), 1)
    with pytest.raises(ValueError, match="device_backend"):
        FlatIndex(4, device_backend="cuvs")
    if not CUDA:
        nog = FlatIndex(4, device="cuda")
        nog.add(np.ones((3, 4), np.float32))
        with pytest.raises(ValueError, match="CUDA is not available"):
            nog.search(np.ones(4, np.float32), 1)


# ----------------------------------------------------------------------------- retrieval
N_ITEMS, DIM = 400, 16


@pytest.fixture(scope="module")
def world():
    rng = np.random.default_rng(0)
    E = rng.standard_normal((N_ITEMS, DIM)).astype(np.float32)
    R = rng.standard_normal((N_ITEMS, 8)).astype(np.float32)
    items = ItemTable(embeddings=E, retrieval_embeddings=R)
    users = np.repeat(np.arange(7) * 10, [1, 30, 300, 1200, 2500, 90, 700])
    its = rng.integers(0, N_ITEMS, users.size)
    ts = rng.integers(0, 3000, users.size)
    store = BehaviorStore.from_arrays(users, its, ts)
    return items, store, rng


def _methods(items, device):
    rng = np.random.default_rng(4)
    Wq = rng.standard_normal((DIM, 12)).astype(np.float32)
    Wk = rng.standard_normal((DIM, 12)).astype(np.float32)
    return [
        (Exact(items, k=20), Exact(items, k=20, device=device)),
        (Exact(items, k=20, scale=True, n_heads=3, query_proj=Wq, key_proj=Wk, head_reduce="max"),
         Exact(items, k=20, scale=True, n_heads=3, query_proj=Wq, key_proj=Wk, head_reduce="max", device=device)),
        (TWIN(items, k=20, query_proj=Wq, key_proj=Wk, n_heads=2), TWIN(items, k=20, query_proj=Wq, key_proj=Wk, n_heads=2, device=device)),
        (SoftSearch(items, k=20), SoftSearch(items, k=20, device=device)),
        (SoftSearch(items, k=20, metric="cosine"), SoftSearch(items, k=20, metric="cosine", device=device)),
        (SimHashTopK(items, k=20, n_bits=64, seed=1), SimHashTopK(items, k=20, n_bits=64, seed=1, device=device)),
        (SimHashTopK(items, k=20, n_bits=100, seed=2), SimHashTopK(items, k=20, n_bits=100, seed=2, device=device)),
    ]


def _same_retrieval(got, want):
    np.testing.assert_array_equal(got.positions, want.positions)
    np.testing.assert_allclose(got.scores, want.scores, rtol=2e-5, atol=2e-5)
    np.testing.assert_array_equal(got.mask, want.mask)


@pytest.mark.parametrize("device", DEVICES)
def test_methods_one_request_equal_cpu(world, device):
    items, store, rng = world
    h = store.history(40)
    targets = rng.integers(0, N_ITEMS, 33)
    ttime = rng.integers(-5, 3200, 33)
    ttime[0] = -10  # sees nothing
    for cpu, dev in _methods(items, device):
        for tt in (None, ttime, 1500):
            _same_retrieval(dev.retrieve(h, targets, target_time=tt), cpu.retrieve(h, targets, target_time=tt))
        _same_retrieval(dev.retrieve(h, targets, k=500), cpu.retrieve(h, targets, k=500))  # k > distinct items


@pytest.mark.parametrize("device", DEVICES)
def test_methods_many_users_per_call_equal_cpu(world, device):
    items, store, rng = world
    S = 120
    users = rng.choice(np.arange(7) * 10, S)
    targets = rng.integers(0, N_ITEMS, S)
    ttime = rng.integers(0, 3100, S)
    for cpu, dev in _methods(items, device):
        want = retrieve_batch(cpu, store, users, targets, target_time=ttime)
        got = retrieve_batch(dev, store, users, targets, target_time=ttime)
        _same_retrieval(got, want)
    # SoftSearch with an index: long histories take the index path, short ones the device scan
    idx = FlatIndex(8)
    idx.add(items.retrieval_embeddings, items.ids)
    cpu = SoftSearch(items, k=15, index=idx, exact_below=500)
    dev = SoftSearch(items, k=15, index=idx, exact_below=500, device=device)
    _same_retrieval(retrieve_batch(dev, store, users, targets), retrieve_batch(cpu, store, users, targets))


@pytest.mark.parametrize("device", DEVICES)
def test_retrieval_heavy_ties_go_to_the_more_recent_behavior(device):
    """Integer embeddings with three values: nearly every score ties."""
    rng = np.random.default_rng(9)
    E = rng.integers(-1, 2, (50, 4)).astype(np.float32)
    items = ItemTable(embeddings=E)
    hist = History.from_arrays(rng.integers(0, 50, 3000), np.arange(3000))
    targets = rng.integers(0, 50, 25)
    tt = rng.integers(0, 3100, 25)
    for cls in (Exact, SoftSearch):
        a, b = cls(items, k=40), cls(items, k=40, device=device)
        _same_retrieval(b.retrieve(hist, targets, target_time=tt), a.retrieve(hist, targets, target_time=tt))
    a, b = SimHashTopK(items, k=40, n_bits=8), SimHashTopK(items, k=40, n_bits=8, device=device)
    _same_retrieval(b.retrieve(hist, targets, target_time=tt), a.retrieve(hist, targets, target_time=tt))


def test_retrieval_device_errors(world):
    items, store, _ = world
    m = Exact(items, k=5, device="tpu")
    with pytest.raises(ValueError, match="not a torch device|only 'cpu' and 'cuda'"):
        m.retrieve(store.history(10), [1, 2])
    with pytest.raises(ValueError, match="empty"):
        Exact(items, k=5, device="cpu").retrieve(History.from_arrays(np.zeros(0, np.int64)), [1])
    with pytest.raises(ValueError, match="unknown"):
        Exact(items, k=5, device="cpu").retrieve(store.history(10), [10**9])


@needs_cuda
def test_cuda_flags_are_restored():
    from gsu.device import exact_matmul

    m = torch.backends.cuda.matmul
    before = (m.allow_tf32, m.allow_bf16_reduced_precision_reduction)
    with exact_matmul(torch.device("cuda")):
        assert not m.allow_tf32 and not m.allow_bf16_reduced_precision_reduction
    assert (m.allow_tf32, m.allow_bf16_reduced_precision_reduction) == before


@pytest.mark.skipif(not faiss_gpu_available(), reason="faiss has no GPU support here (the gpu extra, faiss-gpu, and a GPU are needed)")
def test_faiss_gpu_backend_is_chosen_and_equal(catalog):
    x, q, ids = catalog
    cpu, dev = _pair(x, ids, device="cuda")
    st = TopkStats()
    from gsu.index.device import flat_search

    got = flat_search(dev, q, 10, Filter.all(), backend="auto", stats=st)
    _same(got, cpu.search(q, 10))


def test_bench_gpu_runs_on_the_device_there_is_and_says_so(tmp_path, capsys):
    """`gsu bench gpu` on a machine without a GPU: CPU-torch records marked as such, the
    fused results equal to the CPU path, the peer in the same run, JSON lines + PNG."""
    from gsu.bench import gpu

    recs = gpu.run(out_dir=tmp_path, device="cpu", lengths=(600,), n_targets=16, users=2, repeats=1, k=10)
    out = capsys.readouterr().out
    assert "these are CPU numbers, not GPU numbers" in out
    assert {(r["method"], r["users"]) for r in recs} == {
        ("torch-matmul-topk", 1), ("gsu-fused", 1), ("gsu-fused-cuts", 1), ("gsu-exact-retrieve", 1),
        ("torch-matmul-topk", 2), ("gsu-fused", 2), ("gsu-fused-cuts", 2)}
    assert all(r["device"] == "cpu" and r["gpu"] is False and "no GPU measured" in r["device_name"] for r in recs)
    assert all(r["ids_equal"] == 1.0 for r in recs if "ids_equal" in r)
    assert all(r["targets_per_s"] > 0 for r in recs)
    assert (tmp_path / "gpu.jsonl").exists() and (tmp_path / "gpu.png").exists()


def test_select_topk_float_prepass_equals_the_int64_key_selection():
    """select_topk ranks by a float32 top-k and orders those by the int64 key, taking the
    full int64-key top-k only for rows whose k-th score ties with a column left out: the
    same answer as one int64-key top-k over all columns, under heavy ties, NaN and -inf."""
    from gsu.device._topk import _select_topk_keys

    rng = np.random.default_rng(11)
    for _ in range(150):
        M, k = int(rng.integers(1, 300)), int(rng.integers(1, 60))
        s = rng.integers(-3, 4, (2, 3, M)).astype(np.float32)
        s[s == 3] = -np.inf
        s[0, 0, 0] = np.nan
        c = np.stack([rng.permutation(M) for _ in range(6)]).reshape(2, 3, M)
        for tie in ("low", "high"):
            a = select_topk(torch.from_numpy(s), torch.from_numpy(c), k, tie=tie)
            b = _select_topk_keys(torch.from_numpy(s), torch.from_numpy(c), k, tie=tie)
            np.testing.assert_array_equal(a[0].numpy(), b[0].numpy())
            np.testing.assert_array_equal(a[1].numpy(), b[1].numpy())
            ar = np.broadcast_to(np.arange(M), s.shape).copy()
            rc, rs = ref_topk(s.reshape(6, M), k, tie)
            got = select_topk(torch.from_numpy(s), torch.from_numpy(ar), k, tie=tie)
            np.testing.assert_array_equal(got[0].numpy().reshape(6, k), rc)
            np.testing.assert_array_equal(got[1].numpy().reshape(6, k), rs)
