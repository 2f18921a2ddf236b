"""Tests of gsu.ctr: layers vs naive references, metrics vs scikit-learn / hand computation,
views and the time cut, training, determinism and checkpoints. Small data, one thread."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from gsu.ctr import data as cdata
from gsu.ctr.checkpoint import load_checkpoint, save_checkpoint
from gsu.ctr.layers import (
    DinAttention,
    FeatureEmbedding,
    MultiHeadTargetAttention,
    TemporalEncoding,
    masked_softmax,
)
from gsu.ctr.metrics import auc, gauc, logloss
from gsu.ctr.model import ModelConfig, build_model
from gsu.ctr.train import TrainConfig, evaluate, fit, predict
from gsu.ctr.model import BehaviorFeatures, TargetFeatures  # noqa: F401  (re-exported via data)

torch.set_num_threads(1)


# ----------------------------------------------------------------------------- fixtures


def tiny_task(seed: int = 0, n_users: int = 40, n_items: int = 300, dim: int = 8) -> cdata.CTRTask:
    """Users with short sequences; clicks from a planted softmax target-attention model."""
    from gsu.retrieval.items import ItemTable
    from gsu.retrieval.store import BehaviorStore

    rng = np.random.default_rng(seed)
    emb = rng.standard_normal((n_items, dim)).astype(np.float32) / math.sqrt(dim)
    n_cat = 10
    cat = rng.integers(0, n_cat, n_items).astype(np.int64)
    lens = rng.integers(20, 120, n_users)
    indptr = np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)
    items, ts, bt = [], [], []
    for L in lens:
        centre = rng.integers(0, n_items, 3)
        pool = np.concatenate([np.clip(c + rng.integers(-15, 15, 40), 0, n_items - 1) for c in centre])
        items.append(rng.choice(pool, L))
        ts.append(np.sort(rng.integers(0, 10_000, L)))
        bt.append(rng.integers(0, 2, L))
    items, ts, bt = np.concatenate(items).astype(np.int64), np.concatenate(ts).astype(np.int64), np.concatenate(bt)
    store = BehaviorStore(indptr, items, ts, behavior_type=bt.astype(np.int8), category=cat[items])
    su, st, stime, sl = [], [], [], []
    for u in range(n_users):
        a, b = indptr[u], indptr[u + 1]
        for _ in range(12):
            t = int(rng.integers(ts[a] + 1, 10_001))
            vis = items[a:b][ts[a:b] < t]
            tgt = int(rng.choice(items[a:b])) if rng.random() < 0.5 else int(rng.integers(0, n_items))
            if vis.size:
                s = emb[vis] @ emb[tgt] * 4.0
                w = np.exp(s - s.max())
                w /= w.sum()
                z = 6.0 * float(w @ (emb[vis] @ emb[tgt])) - 0.5
            else:
                z = -0.5
            su.append(u), st.append(tgt), stime.append(t), sl.append(rng.random() < 1 / (1 + math.exp(-z)))
    samples = {"user": np.array(su, np.int64), "target": np.array(st, np.int64), "time": np.array(stime, np.int64),
               "label": np.array(sl, np.int8)}
    return cdata.CTRTask(
        name="tiny", store=store, item_category=cat, item_vectors=emb,
        item_tables={"ctr": ItemTable(embeddings=emb, category=cat)}, samples=samples,
        splits=cdata.split_by_time(samples["time"]), n_behavior_types=2, time_unit=50.0,
    )


@pytest.fixture(scope="module")
def task() -> cdata.CTRTask:
    return tiny_task()


# ----------------------------------------------------------------------------- layers


def naive_mha(layer: MultiHeadTargetAttention, q, keys, mask, values):
    """Textbook multi-head attention: project every key and value, loop over rows and heads."""
    B, K, _ = keys.shape
    H, dh = layer.num_heads, layer.head_dim
    Q = layer.w_q(q).view(B, H, dh)
    out = torch.zeros(B, H, dh, dtype=torch.float64)
    weights = torch.zeros(B, H, K, dtype=torch.float64)
    for b in range(B):
        idx = torch.nonzero(mask[b]).flatten()
        for h in range(H):
            if idx.numel() == 0:
                continue
            kk = keys[b, idx].double() @ layer.w_k[h].double().T     # (n, dh)
            vv = values[b, idx].double() @ layer.w_v[h].double().T   # (n, dh)
            s = kk @ Q[b, h].double() / math.sqrt(dh) * math.exp(float(layer.log_scale[h].detach()))
            w = torch.softmax(s, dim=0)
            weights[b, h, idx] = w
            out[b, h] = w @ vv
    return out.reshape(B, H * dh), weights


def test_mha_matches_naive_reference_with_masks():
    g = torch.Generator().manual_seed(0)
    layer = MultiHeadTargetAttention(6, 5, 7, num_heads=3, head_dim=4)
    with torch.no_grad():
        layer.log_scale.copy_(torch.tensor([0.0, 0.5, -0.3]))
    B, K = 5, 9
    q, keys, values = torch.randn(B, 6, generator=g), torch.randn(B, K, 5, generator=g), torch.randn(B, K, 7, generator=g)
    mask = torch.rand(B, K, generator=g) > 0.4
    mask[1] = False           # an all-masked row
    mask[2] = True            # a full row
    mask[3, :] = False
    mask[3, 4] = True         # a single behavior
    out, w = layer(q, keys, mask, values)
    ref_out, ref_w = naive_mha(layer, q, keys, mask, values)
    assert torch.allclose(out.double(), ref_out, atol=1e-5)
    assert torch.allclose(w.double(), ref_w, atol=1e-6)
    assert (w[~mask.unsqueeze(1).expand_as(w)] == 0).all()      # exactly zero where masked
    assert torch.equal(out[1], torch.zeros_like(out[1]))        # all-masked row -> zero vector
    assert torch.allclose(w[0].sum(-1), torch.ones(3))
    # masked slots have no influence at all, whatever they hold
    keys2 = keys.clone()
    keys2[~mask] = 1e6
    assert torch.allclose(layer(q, keys2, mask, values)[0], out)
    out.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in layer.parameters())


def naive_din(layer: DinAttention, q, keys, mask, values):
    B, K, _ = keys.shape
    out = torch.zeros(B, values.shape[2])
    weights = torch.zeros(B, K)
    for b in range(B):
        raw = []
        for i in range(K):
            x = torch.cat([q[b], keys[b, i], q[b] - keys[b, i], q[b] * keys[b, i]])
            raw.append(layer.unit(x).squeeze())
        raw = torch.stack(raw)
        idx = mask[b]
        if not idx.any():
            continue
        w = torch.softmax(raw[idx], 0) if layer.normalize == "softmax" else raw[idx]
        weights[b, idx] = w
        out[b] = w @ values[b, idx]
    return out, weights


@pytest.mark.parametrize("normalize", ["none", "softmax"])
def test_din_matches_naive_reference(normalize):
    g = torch.Generator().manual_seed(1)
    torch.manual_seed(1)
    layer = DinAttention(4, hidden=(8, 5), normalize=normalize)
    B, K = 4, 6
    q, keys, values = torch.randn(B, 4, generator=g), torch.randn(B, K, 4, generator=g), torch.randn(B, K, 3, generator=g)
    mask = torch.rand(B, K, generator=g) > 0.3
    mask[0] = False
    with torch.no_grad():
        out, w = layer(q, keys, mask, values)
        ref_out, ref_w = naive_din(layer, q, keys, mask, values)
    assert torch.allclose(out, ref_out, atol=1e-5) and torch.allclose(w, ref_w, atol=1e-6)
    assert (w[~mask] == 0).all() and torch.equal(out[0], torch.zeros(3))


def test_masked_softmax_all_masked_and_gradients():
    s = torch.tensor([[1.0, 2.0, 3.0], [5.0, -1.0, 0.0]], requires_grad=True)
    m = torch.tensor([[True, False, True], [False, False, False]])
    w = masked_softmax(s, m)
    assert torch.allclose(w[0], torch.softmax(torch.tensor([1.0, 3.0]), 0)[[0, 0, 1]] * torch.tensor([1.0, 0, 1]))
    assert torch.equal(w[1], torch.zeros(3))
    (w * torch.arange(3.0)).sum().backward()
    assert torch.isfinite(s.grad).all() and s.grad[0, 1] == 0 and (s.grad[1] == 0).all()


def test_embeddings_and_temporal_buckets():
    vec = torch.randn(20, 3)
    fe = FeatureEmbedding(n_items=20, n_categories=4, n_behavior_types=2, item_dim=5, category_dim=2, type_dim=3,
                          item_vectors=vec)
    items = torch.tensor([[1, 2], [3, 19]])
    out = fe(items, torch.tensor([[0, 1], [2, 3]]), torch.tensor([[0, 1], [1, 0]]))
    assert out.shape == (2, 2, 3 + 5 + 2 + 3) and fe.out_dim == 13
    assert torch.equal(out[1, 1, :3], vec[19])
    tgt = fe(torch.tensor([4]), torch.tensor([1]), None)
    assert torch.equal(tgt[0, -3:], torch.zeros(3))  # the target has no behavior type
    b = TemporalEncoding.bucketize(torch.tensor([0.0, 0.5, 1.0, 3.0, 7.0, 1e9]), 6)
    assert b.tolist() == [1, 1, 2, 3, 4, 5]
    with pytest.raises(ValueError):
        FeatureEmbedding(n_items=5, n_categories=2, item_vectors=torch.zeros(4, 2))
    with pytest.raises(TypeError):
        MultiHeadTargetAttention(4, 4)(torch.zeros(2, 4), torch.zeros(2, 3, 4), torch.ones(2, 3))


# ----------------------------------------------------------------------------- metrics


def test_auc_matches_sklearn_with_ties():
    from sklearn.metrics import log_loss, roc_auc_score

    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 500)
    s = np.round(rng.random(500) + 0.3 * y, 1)  # many ties
    assert auc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    p = np.clip(rng.random(500), 0.01, 0.99)
    assert logloss(y, p) == pytest.approx(log_loss(y, p), abs=1e-9)
    with pytest.raises(ValueError):
        auc(np.ones(4), np.arange(4.0))
    with pytest.raises(ValueError):
        auc(np.array([0, 2]), np.arange(2.0))
    with pytest.raises(ValueError):
        logloss(np.array([0, 1]), np.array([-0.5, 2.0]))


def test_gauc_hand_computed():
    # user 1: 3 samples, pairs (pos 0.9 vs neg 0.2, 0.95): AUC = (1 + 0) / 2 = 0.5
    # user 2: 4 samples, pos {0.8, 0.3}, neg {0.5, 0.3}: pairs 1 + 1 + 0 + 0.5 -> 2.5/4 = 0.625
    # user 3: only clicks -> excluded. GAUC = (3 * 0.5 + 4 * 0.625) / 7
    y = np.array([1, 0, 0, 1, 1, 0, 0, 1, 1])
    s = np.array([0.9, 0.2, 0.95, 0.8, 0.3, 0.5, 0.3, 0.1, 0.7])
    u = np.array([1, 1, 1, 2, 2, 2, 2, 3, 3])
    assert gauc(y, s, u) == pytest.approx((3 * 0.5 + 4 * 0.625) / 7)
    assert math.isnan(gauc(np.array([1, 0]), np.array([0.1, 0.2]), np.array([1, 2])))


# ----------------------------------------------------------------------------- data / views


def test_prefix_and_positions_views_respect_time(task):
    view = cdata.prefix_view(task, "val", cap=5)
    batch = next(cdata.iter_batches(task, view, batch_size=8))
    ts_all = task.store.column("timestamps")
    ip = task.store.indptr
    for j in range(len(batch)):
        sidx = view.samples[int(batch.index[j])]
        r = view.rows[int(batch.index[j])]
        t = task.samples["time"][sidx]
        hist_ts = ts_all[ip[r]:ip[r + 1]]
        vis = int((hist_ts < t).sum())
        n = min(vis, 5)
        assert int(batch.mask[j].sum()) == n
        want = task.store.column("items")[ip[r] + vis - n: ip[r] + vis]
        assert np.array_equal(batch.behaviors.item[j][batch.mask[j]].numpy(), want)
    idx = task.split("val")
    rows, vis = cdata.visible_counts(task, idx)
    pos = np.full((idx.size, 2), -1, np.int64)
    pos[:, 0] = vis  # the first behavior at/after the time cut: the future
    with pytest.raises(ValueError, match="time"):
        cdata.positions_view(task, idx, pos, pos >= 0)


# ----------------------------------------------------------------------------- training / checkpoints


def _config(task, **kw) -> ModelConfig:
    base = dict(n_items=task.n_items, n_categories=task.n_categories, n_behavior_types=2, content_dim=8,
                item_dim=4, category_dim=4, type_dim=2, num_heads=2, head_dim=8, mlp_hidden=(16,))
    base.update(kw)
    return ModelConfig(**base)


def test_training_reduces_loss_and_is_deterministic(task):
    tr, va = cdata.prefix_view(task, "train", cap=64), cdata.prefix_view(task, "val", cap=64)
    cfg = TrainConfig(epochs=4, batch_size=32, lr=1e-2, patience=4, seed=3, progress=False)
    m1 = build_model(_config(task), item_vectors=task.item_vectors, seed=3)
    y = task.samples["label"][tr.samples]
    before = logloss(y, predict(m1, task, tr))
    r1 = fit(m1, task, tr, va, config=cfg)
    after = logloss(y, predict(m1, task, tr))
    assert after < before - 0.02, (before, after)
    assert r1.history[-1]["train_loss"] < r1.history[0]["train_loss"]
    m2 = build_model(_config(task), item_vectors=task.item_vectors, seed=3)
    fit(m2, task, tr, va, config=cfg)
    for (k, a), (_, b) in zip(m1.state_dict().items(), m2.state_dict().items()):
        assert torch.equal(a, b), k


def test_chunked_prediction_equals_unchunked(task):
    view = cdata.prefix_view(task, "test", cap=100)
    m = build_model(_config(task, decoupled=True, temporal="position"), item_vectors=task.item_vectors, seed=0)
    a = predict(m, task, view, batch_size=64)
    b = predict(m, task, view, batch_size=64, max_behaviors_per_chunk=150)
    assert np.allclose(a, b, atol=1e-6)


def test_checkpoint_round_trip(task, tmp_path):
    m = build_model(_config(task, attention="din"), item_vectors=task.item_vectors, seed=5)
    view = cdata.prefix_view(task, "test", cap=16)
    p = save_checkpoint(tmp_path / "m.pt", m, train_config=TrainConfig().to_dict(), meta={"method": "last", "k": 16})
    m2, info = load_checkpoint(p)
    assert info["meta"] == {"method": "last", "k": 16} and info["model_config"] == m.config
    assert np.array_equal(predict(m, task, view), predict(m2, task, view))
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="bad.pt"):
        load_checkpoint(tmp_path / "bad.pt")
    with pytest.raises(TypeError):
        save_checkpoint(tmp_path / "x.pt", m, meta={"bad": object()})


def test_sdim_model_and_view(task):
    idx = task.split("test")
    rng = np.random.default_rng(0)
    vec = rng.standard_normal((idx.size, 8)).astype(np.float32)
    mask = rng.random(idx.size) > 0.2
    vec[~mask] = 0
    view = cdata.sdim_view(task, idx, vec, mask)
    m = build_model(_config(task, kind="sdim", sdim_dim=8), item_vectors=task.item_vectors, seed=0)
    r = evaluate(m, task, view)
    assert 0.0 <= r["auc"] <= 1.0 and r["n"] == idx.size
    tm = build_model(_config(task), item_vectors=task.item_vectors)
    with pytest.raises(ValueError, match="view"):
        predict(tm, task, view)
    with pytest.raises(ValueError):
        ModelConfig(n_items=3, n_categories=1, kind="sdim")


@pytest.mark.parametrize("decoupled", [False, True])
def test_factorized_attention_equals_generic(task, decoupled):
    view = cdata.prefix_view(task, "test", cap=50)
    cfg = _config(task, decoupled=decoupled)
    m = build_model(cfg, item_vectors=task.item_vectors, seed=2)
    batch = next(cdata.iter_batches(task, view, batch_size=32, temporal=cfg.temporal))
    batch.mask[0] = False
    fast = m(*batch.model_inputs())
    fast.sum().backward()
    g_fast = {k: p.grad.clone() for k, p in m.named_parameters() if p.grad is not None}
    m.zero_grad()
    m.factorized = False
    slow = m(*batch.model_inputs())
    slow.sum().backward()
    assert torch.allclose(fast, slow, atol=1e-5)
    for k, p in m.named_parameters():
        if p.grad is not None:
            assert torch.allclose(g_fast[k], p.grad, atol=1e-4), k


def test_twin_retriever_scores_are_the_models_attention(task):
    """With no time encoding and no behavior types, TWIN's precomputed score is exactly the
    model's summed per-head attention logit, so its top-k is the attention's own top-k."""
    from gsu.ctr.pipeline import twin_retriever
    from gsu.retrieval.batch import retrieve_batch

    cfg = _config(task, temporal="none", n_behavior_types=1, type_dim=0)
    m = build_model(cfg, item_vectors=task.item_vectors, seed=4)
    with torch.no_grad():
        m.attention.log_scale.copy_(torch.tensor([0.3, -0.2]))
    idx = task.split("test")[:20]
    s = task.samples
    res = retrieve_batch(twin_retriever(task, m, k=8), task.store, s["user"][idx], s["target"][idx],
                         target_time=s["time"][idx], k=8)
    view = cdata.prefix_view(task, idx, cap=10_000)
    batch = cdata.make_batch(task, view, np.arange(len(view)), temporal="none")
    t = m.embed_target(batch.target)
    qk = m.attention.query_keyspace(t.attention)                                   # (B, H, D)
    x = m.embedding(batch.behaviors.item, batch.behaviors.category, batch.behaviors.behavior_type).attention
    logits = torch.einsum("bhd,bkd->bk", qk, x).detach().numpy()                   # summed over heads
    for j in range(len(idx)):
        n = int(batch.mask[j].sum())
        want = np.sort(logits[j, :n])[::-1][: min(8, n)]
        got = res.scores[j][res.mask[j]]
        assert np.allclose(np.sort(got)[::-1], want, atol=1e-4)


def test_shared_history_forward_equals_per_sample(task):
    """The user-grouped full-attention form gives the per-sample model's logits and gradients."""
    from gsu.ctr.train import TrainConfig as TC, _shared

    for temporal in ("time", "position", "none"):
        cfg = _config(task, temporal=temporal, decoupled=temporal == "time")
        m = build_model(cfg, item_vectors=task.item_vectors, seed=3)
        for cap in (10_000, 25):
            view = cdata.prefix_view(task, "test", cap=cap)
            a = predict(m, task, view, shared_min_cap=10**9)
            b = predict(m, task, view, shared_min_cap=1, max_behaviors_per_chunk=400)
            assert np.abs(a - b).max() < 1e-5, (temporal, cap)
    # gradients: one user's samples, grouped vs expanded
    view = cdata.prefix_view(task, "train", cap=10_000)
    sel = np.flatnonzero(view.rows == view.rows[0])
    m = build_model(_config(task), item_vectors=task.item_vectors, seed=1)
    sb = _shared(m, task, view, sel)
    m(*cdata.make_batch(task, view, sel).model_inputs()).sum().backward()
    g1 = {k: p.grad.clone() for k, p in m.named_parameters() if p.grad is not None}
    m.zero_grad()
    m.forward_shared(sb.target, sb.history, sb.mask).sum().backward()
    for k, p in m.named_parameters():
        if p.grad is not None:
            assert torch.allclose(g1[k], p.grad, atol=1e-5), k
    assert TC().select == "logloss"


@pytest.mark.parametrize("attention", ["mha", "din"])
def test_pooling_does_not_grow_with_k(task, attention):
    """Repeating the same behavior k times leaves the output unchanged: the pooled vector is a
    normalised (softmax) average, not a sum that grows with k."""
    m = build_model(_config(task, attention=attention, temporal="none"), item_vectors=task.item_vectors, seed=0)
    tgt = cdata.TargetFeatures(torch.tensor([3, 7]), torch.tensor([1, 2]))
    outs = []
    for k in (1, 16, 256):
        beh = cdata.BehaviorFeatures(torch.full((2, k), 5), torch.full((2, k), 4), torch.zeros(2, k, dtype=torch.int64),
                                     torch.ones(2, k, dtype=torch.int64))
        outs.append(m(tgt, beh, torch.ones(2, k, dtype=torch.bool)))
    assert torch.allclose(outs[0], outs[1], atol=1e-5) and torch.allclose(outs[0], outs[2], atol=1e-5)


def test_training_schedule_and_selection(task):
    """Plateau schedule: the LR drops after a non-improving epoch; the kept epoch is the one
    with the best validation logloss."""
    tr, va = cdata.prefix_view(task, "train", cap=32), cdata.prefix_view(task, "val", cap=32)
    cfg = TrainConfig(epochs=6, batch_size=32, lr=3e-2, patience=5, warmup_steps=3, lr_decay=0.5, seed=0, progress=False)
    m = build_model(_config(task), item_vectors=task.item_vectors, seed=0)
    r = fit(m, task, tr, va, config=cfg)
    losses = [h["val_logloss"] for h in r.history]
    assert r.best_epoch == int(np.argmin(losses)) + 1
    assert r.best_val["logloss"] == pytest.approx(min(losses))
    best = math.inf
    for i, h in enumerate(r.history):
        improved = h["val_logloss"] < best - cfg.min_delta
        best = min(best, h["val_logloss"])
        if i + 1 < len(r.history):
            want = h["lr"] if improved else h["lr"] * cfg.lr_decay
            assert r.history[i + 1]["lr"] == pytest.approx(want)
    got = evaluate(m, task, va)
    assert got["logloss"] == pytest.approx(min(losses), abs=1e-6)
    with pytest.raises(ValueError):
        TrainConfig(select="accuracy")


@pytest.mark.parametrize("kind", ["attention", "sdim"])
def test_torchscript_export_matches_eager(task, tmp_path, kind):
    from gsu.ctr.export import export_torchscript, load_exported, serving_inputs

    if kind == "sdim":
        idx = task.split("test")
        rng = np.random.default_rng(1)
        vec = rng.standard_normal((idx.size, 8)).astype(np.float32)
        view = cdata.sdim_view(task, idx, vec, rng.random(idx.size) > 0.2)
        m = build_model(_config(task, kind="sdim", sdim_dim=8), item_vectors=task.item_vectors, seed=0)
    else:
        view = cdata.prefix_view(task, "test", cap=40)
        m = build_model(_config(task, decoupled=True), item_vectors=task.item_vectors, seed=0)
        fit(m, task, cdata.prefix_view(task, "train", cap=40), cdata.prefix_view(task, "val", cap=40),
            config=TrainConfig(epochs=1, batch_size=32, seed=0, progress=False))
    batches = list(cdata.iter_batches(task, view, batch_size=17, temporal=m.config.temporal))
    export_torchscript(m, tmp_path / "esu.ts", example=batches[0])
    loaded = load_exported(tmp_path / "esu.ts")
    for b in batches[1:]:        # other batch sizes and K than the traced example
        with torch.no_grad():
            eager = torch.sigmoid(m(*b.model_inputs()))
            got = loaded(*serving_inputs(b))
        assert got.shape == eager.shape
        assert float((got - eager).abs().max()) <= 1e-5
    with pytest.raises(ValueError, match="TorchScript"):
        (tmp_path / "bad.ts").write_bytes(b"junk")
        load_exported(tmp_path / "bad.ts")


# ----------------------------------------------------------------------------- devices


def test_device_argument_on_cpu_and_bad_devices(task):
    """fit / evaluate / predict with an explicit device="cpu" equal the defaults bit for bit;
    a malformed device string, or CUDA where there is none, is a ValueError naming it."""
    tr, va = cdata.prefix_view(task, "train", cap=64), cdata.prefix_view(task, "val", cap=64)
    te = cdata.prefix_view(task, "test", cap=64)
    cfg = TrainConfig(epochs=2, batch_size=32, lr=1e-2, patience=2, seed=1, progress=False)
    m1 = build_model(_config(task), item_vectors=task.item_vectors, seed=1)
    m2 = build_model(_config(task), item_vectors=task.item_vectors, seed=1)
    r1 = fit(m1, task, tr, va, config=cfg)
    r2 = fit(m2, task, tr, va, config=cfg, device="cpu")
    assert [h["val_logloss"] for h in r1.history] == [h["val_logloss"] for h in r2.history]
    assert np.array_equal(predict(m1, task, te), predict(m2, task, te, device="cpu"))
    e1, e2 = evaluate(m1, task, te), evaluate(m2, task, te, device=torch.device("cpu"))
    assert (e1["auc"], e1["logloss"]) == (e2["auc"], e2["logloss"])
    with pytest.raises(ValueError, match="'gpu0'"):
        predict(m1, task, te, device="gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            fit(m1, task, tr, va, config=cfg, device="cuda")
        assert next(m1.parameters()).device.type == "cpu"   # refused before the model moved


@pytest.mark.parametrize("kind", ["positions", "sdim", "shared"])
def test_batches_move_every_tensor_to_the_device(task, kind):
    """The batch mover reaches every tensor, nested feature tuples included (checked on the
    'meta' device, which every torch build has); the CPU is a no-op returning the same batch."""
    from gsu.ctr.train import _to

    if kind == "shared":
        view = cdata.prefix_view(task, "test", cap=10_000)
        rows = np.flatnonzero(view.rows == view.rows[0])
        b = cdata.make_shared_batch(task, view, rows)
    elif kind == "sdim":
        idx = task.split("test")
        vec = np.random.default_rng(0).standard_normal((idx.size, 8)).astype(np.float32)
        view = cdata.sdim_view(task, idx, vec, np.ones(idx.size, bool))
        b = cdata.make_batch(task, view, np.arange(8))
    else:
        view = cdata.prefix_view(task, "test", cap=16)
        b = cdata.make_batch(task, view, np.arange(8))
    assert _to(b, torch.device("cpu")) is b
    moved = _to(b, torch.device("meta"))
    assert type(moved) is type(b)

    def tensors(x):
        if isinstance(x, torch.Tensor):
            yield x
        elif isinstance(x, tuple):
            for t in x:
                yield from tensors(t)
        elif hasattr(x, "__dataclass_fields__"):
            for f in x.__dataclass_fields__:
                yield from tensors(getattr(x, f))

    before, after = list(tensors(b)), list(tensors(moved))
    assert len(after) == len(before) >= 5
    assert all(t.device.type == "meta" for t in after)
    assert [t.shape for t in after] == [t.shape for t in before]
    assert [t.dtype for t in after] == [t.dtype for t in before]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine: the CUDA trainer test needs one")
def test_cuda_training_and_scores_match_the_cpu(task):
    """On a CUDA device: scores of one model equal the CPU's to 1e-5; training there reaches
    a loss like the CPU's, and the model ends on that device."""
    tr, va = cdata.prefix_view(task, "train", cap=64), cdata.prefix_view(task, "val", cap=64)
    te = cdata.prefix_view(task, "test", cap=64)
    cfg = TrainConfig(epochs=3, batch_size=32, lr=1e-2, patience=3, seed=2, progress=False)
    m = build_model(_config(task), item_vectors=task.item_vectors, seed=2)
    fit(m, task, tr, va, config=cfg)
    cpu = predict(m, task, te)
    gpu = predict(m, task, te, device="cuda")
    assert next(m.parameters()).device.type == "cuda"
    assert np.allclose(cpu, gpu, atol=1e-5)
    m2 = build_model(_config(task), item_vectors=task.item_vectors, seed=2)
    fit(m2, task, tr, va, config=cfg, device="cuda")
    assert next(m2.parameters()).device.type == "cuda"
    y = task.samples["label"][te.samples]
    assert abs(logloss(y, predict(m2, task, te, device="cuda")) - logloss(y, cpu)) < 0.05


def test_retrieval_oracle_auc_is_the_planted_model_on_the_retrieved_behaviors():
    """On a view with every visible behavior it equals the oracle (AUC of the recorded true
    probabilities); on the exact top-k it reaches the oracle when k covers every history and
    differs from it below; top-1 stays below top-8 and last-8 below the exact top-8; wrong
    label-model constants are refused."""
    from gsu.ctr.experiment import best_possible_auc, retrieval_oracle_auc
    from gsu.retrieval.batch import retrieve_batch
    from gsu.retrieval.methods import Exact

    t = cdata.synthetic_task(n_users=30, seq_len=(60, 400), n_items=3_000, n_targets_per_user=40, seed=1)
    oracle = best_possible_auc(t)
    full = cdata.prefix_view(t, "test", cap=10_000)
    assert abs(retrieval_oracle_auc(t, full) - oracle) < 1e-6
    idx = t.split("test")
    s = t.samples

    def exact_view(k):
        res = retrieve_batch(Exact(t.item_tables["ctr"], k=k), t.store, s["user"][idx], s["target"][idx],
                             target_time=s["time"][idx], k=k)
        return cdata.positions_view(t, "test", res.positions, res.mask)

    a1, a8, a_all = (retrieval_oracle_auc(t, exact_view(k)) for k in (1, 8, 400))
    assert abs(a_all - oracle) < 1e-6
    # fewer behaviors, a coarser model: below 8 (not necessarily below the oracle: on a
    # finite split a score other than the true probability may rank the drawn labels better)
    assert a1 < a8 and abs(a8 - oracle) > 1e-4
    assert retrieval_oracle_auc(t, cdata.prefix_view(t, "test", cap=8)) < a8
    with pytest.raises(ValueError, match="do not reproduce"):
        retrieval_oracle_auc(t, full, scale=5.0)
    assert retrieval_oracle_auc(tiny_task(), cdata.prefix_view(tiny_task(), "test", cap=8)) is None
