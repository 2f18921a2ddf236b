"""The sparse scale step's side-by-side phase, on a small collection, in this process."""

import json

import numpy as np
import pytest

pytest.importorskip("seismic")


def test_side_phase_times_both_libraries_in_one_process(tmp_path):
    from gsu.bench import harness
    from gsu.bench.peers import PyseismicPeer
    from gsu.bench.sparse import BUILD, K, _side_phase, _Truth, run_scale
    from gsu.datasets.sparse import rarity_collection
    from gsu.index import SeismicIndex, SparseFlatIndex

    n, name, cache = 1500, "rarity-1500", tmp_path / "cache"
    cache.mkdir()
    c = rarity_collection(n, 16, vocab_size=3000, avg_nnz=40, query_nnz=10, n_topics=30, seed=3)
    docs, queries = c.docs.tocsr(), c.queries.tocsr()
    SeismicIndex.build(docs, **BUILD, value_dtype="float16", seed=0, auto_calibrate=False).save(cache / f"gsu_{name}.gsu")
    PyseismicPeer(docs, **BUILD, save_to=str(cache / f"py_{name}"))
    flat = SparseFlatIndex(docs.shape[1])
    flat.add(docs)
    ex = flat.search(queries, K)
    rec = _side_phase(name, n, cache, queries, _Truth(docs, queries, ex.ids, ex.scores), [queries[i] for i in range(16)], 1)
    # without the sweeps' records the phase times its small default grid
    assert [(r["query_cut"], r["heap_factor"]) for r in rec["points"]] == [(2, 0.8), (3, 0.9), (4, 1.0)]
    for r in rec["points"]:
        assert 0.0 <= r["recall_gsu"] <= 1.0 and 0.0 <= r["recall_pyseismic"] <= 1.0
        for m in ("gsu-mapped", "gsu-memory", "pyseismic"):
            assert r[f"ms_{m}"] > 0
        assert r["ratio_mapped"] == pytest.approx(r["ms_gsu-mapped"] / r["ms_pyseismic"])
        assert r["ratio_memory"] == pytest.approx(r["ms_gsu-memory"] / r["ms_pyseismic"])
    recalls = [r["recall_gsu"] for r in rec["points"]]
    assert recalls == sorted(recalls)  # more query terms, a lower heap factor: never less recall here
    assert rec["open_mapped_s"] > 0 and rec["open_memory_s"] > 0
    # the step gathers a cached phase record without running it again
    (cache / f"phase_{n}_side.json").write_text(json.dumps(rec, default=harness._json_default))
    recs = run_scale(out_dir=tmp_path / "out", n=n, cache_dir=cache, phases=("side",))
    assert [r["query_cut"] for r in recs if r["kind"] == "side"] == [2, 3, 4]
    written = [json.loads(line) for line in (tmp_path / "out" / "sparse_scale.jsonl").read_text().splitlines()]
    assert sum(r["kind"] == "side" for r in written) == 3
    assert np.isfinite([r["open_memory_s"] for r in written if r["kind"] == "open"]).all()


def test_side_points_come_from_the_sweeps(tmp_path):
    from gsu.bench.sparse import _side_points

    sweep = [{"method": "gsu", "query_cut": 2, "heap_factor": 1.0, "recall": 0.91, "ms_per_query": 0.5},
             {"method": "gsu", "query_cut": 3, "heap_factor": 1.0, "recall": 0.96, "ms_per_query": 0.7},
             {"method": "gsu", "query_cut": 4, "heap_factor": 0.6, "recall": 0.97, "ms_per_query": 0.9},
             {"method": "gsu-default", "query_cut": None, "heap_factor": None, "recall": 0.99, "ms_per_query": 0.1}]
    py = [{"method": "pyseismic", "query_cut": 3, "heap_factor": 0.8, "recall": 0.95, "ms_per_query": 0.4}]
    (tmp_path / "phase_7_search-gsu.json").write_text(json.dumps({"sweep": sweep}))
    (tmp_path / "phase_7_search-py.json").write_text(json.dumps({"sweep": py}))
    # fastest point reaching 0.90 and 0.95 for each library, in that order, without repeats
    assert _side_points(tmp_path, 7) == [(2, 1.0), (3, 0.8), (3, 1.0)]
