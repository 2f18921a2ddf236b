"""Tests of the schema-driven log reader, the causal log task, the base-rate baseline and
`gsu train` on a log whose schema the code has never seen. Small data, one thread."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from gsu.ctr.baseline import base_rate_features, fit_logistic
from gsu.ctr.logtask import log_task, task_from_log
from gsu.datasets.logs import LogSchema, read_log
from gsu.errors import DataFormatError

torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parents[1]
TAOBAO = ROOT / ".." / "shared" / "datasets" / "taobao-userbehavior-sample" / "UserBehavior.csv"


def impression_log(seed: int = 0, n_users: int = 30, n_items: int = 120, n_rows: int = 3_000) -> dict[str, np.ndarray]:
    """A click log with unusual column names, string user ids, a brand (categorical) and a
    price (numeric) per item; clicks are likelier for items whose brand the user clicked before."""
    rng = np.random.default_rng(seed)
    brand = rng.integers(0, 6, n_items)
    price = np.round(rng.lognormal(3, 1, n_items), 2)
    users = rng.integers(0, n_users, n_rows)
    items = rng.integers(0, n_items, n_rows)
    ts = np.sort(rng.integers(1_600_000_000, 1_600_000_000 + 90 * 86_400, n_rows))
    fav = rng.integers(0, 6, n_users)
    p = np.where(brand[items] == fav[users], 0.7, 0.15)
    click = (rng.random(n_rows) < p).astype(np.int64)
    return {"visitor": np.array([f"v{u:03d}" for u in users]), "sku": items + 10_000, "event_time": ts,
            "clicked": click, "shelf": brand[items] % 3, "brand_code": np.array([f"b{b}" for b in brand[items]]),
            "price_eur": price[items]}


SCHEMA = {"user": "visitor", "item": "sku", "timestamp": "event_time", "label": "clicked", "category": "shelf",
          "categorical": ["brand_code"], "numeric": ["price_eur"]}


def write_parquet(cols: dict[str, np.ndarray], path: Path) -> Path:
    pq.write_table(pa.table(cols), path)
    return path


def test_read_log_roles_order_and_errors(tmp_path):
    cols = impression_log()
    p = write_parquet(cols, tmp_path / "log.parquet")
    log = read_log(p, SCHEMA)
    assert len(log) == 3_000 and log.n_users == len(set(cols["visitor"]))
    assert log.label.sum() == cols["clicked"].sum()
    key = log.user * 10**10 + log.timestamp
    assert (np.diff(key) >= 0).all()                              # sorted by (user, time)
    assert set(log.categorical) == {"brand_code"} and log.numeric["price_eur"].dtype == np.float32
    assert np.array_equal(np.sort(log.item_values), np.unique(cols["sku"]))
    # the same log as CSV reads the same
    import pyarrow.csv as pacsv

    pacsv.write_csv(pa.table(cols), tmp_path / "log.csv")
    log2 = read_log(tmp_path / "log.csv", SCHEMA)
    assert np.array_equal(log.item, log2.item) and np.array_equal(log.timestamp, log2.timestamp)
    bad = dict(SCHEMA, item="product")
    with pytest.raises(DataFormatError, match="product"):
        read_log(p, bad)
    with pytest.raises(DataFormatError, match="0/1"):
        read_log(p, dict(SCHEMA, label="price_eur", numeric=[]))
    with pytest.raises(DataFormatError, match="more than one role"):
        read_log(p, dict(SCHEMA, label="price_eur"))
    with pytest.raises(DataFormatError, match="unknown key"):
        LogSchema.from_dict({**SCHEMA, "colour": "x"})
    with pytest.raises(DataFormatError, match="suffix"):
        (tmp_path / "log.xlsx").write_bytes(b"x")
        read_log(tmp_path / "log.xlsx", SCHEMA)


def _sample_keys(task, log, cutoff):
    """The samples before ``cutoff`` in file-id space, with their features and visible history."""
    s = task.samples
    sel = np.flatnonzero(s["time"] < cutoff)
    out = []
    for j in sel:
        u = int(s["user"][j])
        h = task.store.history(u)
        vis = h.items[h.timestamps < s["time"][j]]
        t = int(s["target"][j])
        feats = () if task.item_features is None else (
            tuple(task.item_features["categorical"][t]), tuple(np.round(task.item_features["numeric"][t], 5)))
        out.append((int(log.user_keys[u]), int(log.item_keys[t]), int(s["time"][j]), int(s["label"][j]),
                    bool(s["impression"][j]), int(task.item_category[t]), feats,
                    tuple(int(x) for x in log.item_keys[vis])))
    return sorted(out)


@pytest.mark.parametrize("labelled", [True, False])
def test_log_task_samples_do_not_depend_on_later_events(tmp_path, labelled):
    """Perturb every event after a cutoff (new items and users, changed items, dropped rows):
    every sample before the cutoff — target, label, negatives, item features, visible history —
    is unchanged."""
    cols = impression_log(seed=1)
    schema = dict(SCHEMA) if labelled else {k: v for k, v in SCHEMA.items() if k != "label"}
    cutoff = int(np.quantile(cols["event_time"], 0.6))
    rng = np.random.default_rng(7)
    late = cols["event_time"] >= cutoff
    pert = {k: v.copy() for k, v in cols.items()}
    pert["sku"][late] = rng.integers(0, 400, late.sum()) + 5_000           # new and other items later on
    pert["visitor"] = pert["visitor"].astype(object)
    pert["visitor"][late & (rng.random(late.size) < 0.3)] = "newcomer"
    pert["price_eur"][late] = 1.0
    pert["clicked"][late] = 1 - pert["clicked"][late]
    keep = ~late | (rng.random(late.size) < 0.7)
    pert = {k: np.asarray(v[keep]) for k, v in pert.items()}
    pert["visitor"] = pert["visitor"].astype(str)
    a = log_task(read_log(write_parquet(cols, tmp_path / "a.parquet"), schema), negatives=2, sample_rate=0.8, seed=3)
    b = log_task(read_log(write_parquet(pert, tmp_path / "b.parquet"), schema), negatives=2, sample_rate=0.8, seed=3)
    la, lb = read_log(tmp_path / "a.parquet", schema), read_log(tmp_path / "b.parquet", schema)
    ka, kb = _sample_keys(a, la, cutoff), _sample_keys(b, lb, cutoff)
    assert len(ka) > 500 and ka == kb
    # negatives: label 0, never an item the user touched by then, drawn from earlier events
    s = a.samples
    neg = np.flatnonzero(~s["impression"])
    assert neg.size > 300 and (s["label"][neg] == 0).all()
    first_seen = {}
    for i, t in zip(la.item, la.timestamp):
        first_seen[int(i)] = min(first_seen.get(int(i), t), t)
    touched = {}
    for u, i, t in zip(la.user, la.item, la.timestamp):
        touched.setdefault((int(u), int(i)), t)
        touched[(int(u), int(i))] = min(touched[(int(u), int(i))], t)
    for j in neg[:400]:
        u, i, t = int(s["user"][j]), int(s["target"][j]), int(s["time"][j])
        assert first_seen[i] < t
        assert touched.get((u, i), math.inf) > t
    # a different seed changes the negatives
    c = log_task(la, negatives=2, sample_rate=0.8, seed=4)
    assert not np.array_equal(c.samples["target"], a.samples["target"])


def test_base_rate_features_use_only_earlier_impressions(tmp_path):
    cols = impression_log(seed=2)
    task = log_task(read_log(write_parquet(cols, tmp_path / "l.parquet"), SCHEMA), negatives=1, seed=0)
    f = base_rate_features(task, prior=0.3, strength=5.0)
    s = task.samples
    for j in range(0, s["user"].shape[0], 97):
        same = (s["user"] == s["user"][j]) & (s["time"] < s["time"][j]) & s["impression"]
        n, c = same.sum(), s["label"][same].sum()
        assert f[j, 0] == pytest.approx((c + 1.5) / (n + 5.0))
        assert f[j, 1] == pytest.approx(math.log1p(n))
    w = fit_logistic(np.c_[np.linspace(-2, 2, 400)], (np.linspace(-2, 2, 400) > 0).astype(float), l2=1.0)
    assert w[0] > 0


def test_gsu_train_on_a_log_with_an_unseen_schema(tmp_path, capsys):
    """End to end: a Parquet log whose columns the code has never seen, extra categorical and
    numeric item features, item embeddings from a file; checkpoint and TorchScript export."""
    from gsu.cli import main
    from gsu.ctr.checkpoint import load_checkpoint
    from gsu.ctr.export import load_exported

    cols = impression_log(seed=3)
    log_path = write_parquet(cols, tmp_path / "clicks.parquet")
    (tmp_path / "schema.json").write_text(json.dumps(SCHEMA))
    skus = np.unique(cols["sku"])
    vec = np.random.default_rng(0).standard_normal((skus.size, 8)).astype(np.float32)
    np.savez(tmp_path / "emb.npz", ids=skus, vectors=vec)
    rc = main(["train", "--data", str(log_path), "--schema", str(tmp_path / "schema.json"), "--item-embeddings",
               str(tmp_path / "emb.npz"), "--method", "soft", "-k", "8", "--epochs", "2", "--batch-size", "64",
               "--negatives", "1", "--out", str(tmp_path / "m.pt"), "--export", str(tmp_path / "m.ts")])
    out = capsys.readouterr()
    assert rc == 0, out.err
    assert "SIM-soft" in out.out and "base rate" in out.out
    assert "epoch 1" in out.err and "task clicks" in out.err        # one line per stage off a terminal
    m, info = load_checkpoint(tmp_path / "m.pt")
    assert m.config.extra_categorical and m.config.extra_numeric == 1 and m.config.content_dim == 8
    assert 0.0 <= info["meta"]["test_auc"] <= 1.0
    load_exported(tmp_path / "m.ts")
    # a wrong schema is a one-line error naming the file, exit code 2
    (tmp_path / "bad.json").write_text(json.dumps({**SCHEMA, "user": "customer"}))
    rc = main(["train", "--data", str(log_path), "--schema", str(tmp_path / "bad.json"), "--method", "last"])
    err = capsys.readouterr().err
    assert rc == 2 and "customer" in err and "clicks.parquet" in err


def test_gsu_train_on_the_taobao_sample_as_parquet(tmp_path, capsys):
    if not TAOBAO.is_file():
        pytest.skip(f"Taobao sample not found at {TAOBAO}")
    import pyarrow.csv as pacsv

    from gsu.cli import main

    names = ["user_id", "item_id", "category_id", "behavior_type", "timestamp"]
    t = pacsv.read_csv(TAOBAO, read_options=pacsv.ReadOptions(column_names=names))
    pq.write_table(t, tmp_path / "taobao.parquet")
    (tmp_path / "s.json").write_text(json.dumps({"user": "user_id", "item": "item_id", "timestamp": "timestamp",
                                                 "category": "category_id", "behavior": "behavior_type"}))
    rc = main(["train", "--data", str(tmp_path / "taobao.parquet"), "--schema", str(tmp_path / "s.json"),
               "--method", "hard", "-k", "16", "--epochs", "2", "--json"])
    out = capsys.readouterr().out
    assert rc == 0
    summary = json.loads(out)
    assert summary["data"] == "taobao" and 0.5 < summary["test_auc"] <= 1.0
    task = task_from_log(tmp_path / "taobao.parquet", schema=tmp_path / "s.json")
    assert task.n_behavior_types == 4 and task.info["n_samples"] > 5_000


def test_train_and_bench_build_the_same_movielens_task():
    from gsu.bench.ctr import MOVIELENS
    from gsu.ctr.logtask import movielens_task
    from gsu.ctr.pipeline import build_task

    folder = ROOT / MOVIELENS
    if not (folder / "ratings.csv").is_file():
        pytest.skip(f"MovieLens latest-small not found at {folder}")
    a = build_task(data=str(folder))                       # what `gsu train --data movielens` builds
    b = movielens_task(folder, titles=False)               # what `gsu bench ctr` builds (titles only add MUSE's table)
    assert a.info["fingerprint"] == b.info["fingerprint"]
    for k in ("user", "target", "time", "label"):
        assert np.array_equal(a.samples[k], b.samples[k])
    for s in ("train", "val", "test"):
        assert np.array_equal(a.split(s), b.split(s))
    assert a.item_vectors is None and a.info["item_dim"] == 16   # learned ids: no factors fit on later ratings


def test_gsu_train_method_all_on_a_log_without_embeddings(tmp_path, capsys):
    """The comparison table on a log without item embeddings: SIM-soft, ETA and SDIM search the
    full-attention reference's learned item vectors; every method gets a row, with the
    base-rate baseline beside them."""
    from gsu.cli import main

    cols = impression_log(seed=4, n_users=12, n_items=60, n_rows=900)
    p = write_parquet(cols, tmp_path / "small.parquet")
    (tmp_path / "s.json").write_text(json.dumps({k: v for k, v in SCHEMA.items() if k not in ("categorical", "numeric")}))
    rc = main(["train", "--data", str(p), "--schema", str(tmp_path / "s.json"), "--method", "all", "--ks", "4",
               "--epochs", "1", "--batch-size", "64", "--negatives", "1"])
    out = capsys.readouterr().out
    assert rc == 0
    for label in ("full attention", "last-k", "SIM-hard", "SIM-soft", "ETA", "SDIM", "TWIN-style", "base rate"):
        assert label in out, label


def test_gsu_bench_ctr_on_a_log(tmp_path, capsys):
    """`gsu bench ctr --data LOG --schema S` runs the suite (every method, training, timing,
    report) on the task `gsu train` builds from the same log and options, and writes its own
    ctr_log_quick* files; log options without --data, or --data with another suite, are refused."""
    from gsu.cli import main
    from gsu.ctr.pipeline import build_task

    cols = impression_log(seed=5, n_users=12, n_items=60, n_rows=900)
    p = write_parquet(cols, tmp_path / "shop.parquet")
    schema = tmp_path / "s.json"
    schema.write_text(json.dumps({k: v for k, v in SCHEMA.items() if k != "numeric"}))
    out = tmp_path / "res"
    rc = main(["bench", "ctr", "--quick", "--data", str(p), "--schema", str(schema), "--negatives", "1",
               "--out", str(out)])
    text = capsys.readouterr().out
    assert rc == 0
    recs = [json.loads(line) for line in (out / "ctr_log_quick.jsonl").read_text().splitlines()]
    task = build_task(data=str(p), schema=str(schema), negatives=1)      # what `gsu train` builds
    runs = [r for r in recs if r["kind"] == "run"]
    assert {r["task"] for r in runs} == {task.info["fingerprint"]}
    assert {r["method"] for r in runs} == {"full", "last", "hard", "soft", "eta", "sdim", "twin"}
    assert {r["k"] for r in runs} == {None, 16}
    assert all(r["n_test"] == len(task.splits["test"]) for r in runs)
    lat = [r for r in recs if r["kind"] == "latency"]
    assert {r["method"] for r in lat} == {"full", "last", "hard", "soft", "eta", "sdim", "twin"}
    assert [r["export_max_abs_diff"] for r in lat if "export" in r][0] <= 1e-5
    ref = [r for r in recs if r["kind"] == "reference"]
    assert len(ref) == 1 and ref[0]["oracle"] is None and 0.0 <= ref[0]["base_rate"]["auc"] <= 1.0
    assert (out / "ctr_log_quick_table.md").is_file() and (out / "ctr_log_quick.png").is_file()
    assert "base rate" in text and not (out / "ctr_quick.jsonl").exists()
    rc = main(["bench", "ctr", "--schema", str(schema), "--out", str(out)])
    assert rc == 2 and "--schema: needs --data" in capsys.readouterr().err
    rc = main(["bench", "lsh", "--data", str(p), "--out", str(out)])
    assert rc == 2 and "does not take --data" in capsys.readouterr().err


def test_bench_gsu_on_a_log(tmp_path, capsys):
    """`gsu bench gsu --data LOG --schema S` runs every retrieval method on the log's real
    histories: Exact's recall is 1 against itself, every other value a share; item vectors
    from the log (with categories: per category; without: user x item SVD) or from a file."""
    import json as _json

    from gsu.cli import main

    cols = impression_log(n_users=12, n_items=150, n_rows=2_400)
    p = write_parquet(cols, tmp_path / "log.parquet")
    schema = tmp_path / "s.json"
    schema.write_text(_json.dumps({k: v for k, v in SCHEMA.items() if k not in ("numeric", "categorical", "label")}))
    out = tmp_path / "out"
    assert main(["bench", "gsu", "--quick", "--data", str(p), "--schema", str(schema), "--out", str(out)]) == 0
    recs = [_json.loads(line) for line in (out / "gsu_log_quick.jsonl").read_text().splitlines()]
    by = {r["method"]: r for r in recs}
    assert {"exact", "clustered", "cascade-proj", "simhash", "multi-interest"} <= set(by)
    assert by["exact"]["recall"] == 1.0
    # the exact top-k by score holds the most softmax attention any k behaviors can
    assert all(r["attention_mass"] <= by["exact"]["attention_mass"] + 1e-9 for r in recs)
    for r in recs:
        assert r["dataset"] == "log" and r["users"] == 12 and r["k"] == 20 and r["item_vectors"].startswith("svd-user-category")
        assert 0.0 <= r["recall"] <= 1.0 and 0.0 <= r["attention_mass"] <= 1.0 + 1e-9 and 0.0 <= r["interest_coverage"] <= 1.0
    assert "multi-interest" in capsys.readouterr().out
    # no category column: vectors from the user x item counts, no coverage
    schema.write_text(_json.dumps({"user": "visitor", "item": "sku", "timestamp": "event_time"}))
    assert main(["bench", "gsu", "--quick", "--data", str(p), "--schema", str(schema), "--out", str(out)]) == 0
    recs = [_json.loads(line) for line in (out / "gsu_log_quick.jsonl").read_text().splitlines()]
    assert all(r["item_vectors"].startswith("svd-user-item") and r["interest_coverage"] is None for r in recs)
    # the user's own item vectors
    ids = np.unique(cols["sku"])
    np.savez(tmp_path / "vec.npz", ids=ids, vectors=np.random.default_rng(1).standard_normal((ids.size, 8)).astype(np.float32))
    assert main(["bench", "gsu", "--quick", "--data", str(p), "--schema", str(schema), "--item-embeddings",
                 str(tmp_path / "vec.npz"), "--min-history", "205", "--out", str(out)]) == 0
    recs = [_json.loads(line) for line in (out / "gsu_log_quick.jsonl").read_text().splitlines()]
    assert recs and all(r["item_vectors"] == "file vec.npz" and 0 < r["users"] < 12 for r in recs)
    # options of the CTR suite only, and a log without a schema, are one-line errors
    capsys.readouterr()
    assert main(["bench", "gsu", "--data", str(p), "--schema", str(schema), "--negatives", "2"]) == 2
    assert "negatives" in capsys.readouterr().err
    assert main(["bench", "gsu", "--data", str(p), "--out", str(out)]) == 2
    assert "--schema" in capsys.readouterr().err
