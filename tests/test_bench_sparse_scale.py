"""The sparse scale step's side-by-side phase, on a small collection (each phase in its own process)."""

import json

import pytest

pytest.importorskip("seismic")


def test_side_phase_times_both_libraries_in_one_process(tmp_path):
    from gsu.bench.sparse import run_scale

    recs = run_scale(out_dir=tmp_path / "out", n=1500, cache_dir=tmp_path / "cache", n_queries=20, rounds=1,
                     phases=("data", "build-gsu", "build-py", "side"))
    side = [r for r in recs if r["kind"] == "side"]
    # without the sweeps' records the phase times its small default grid
    assert [(r["query_cut"], r["heap_factor"]) for r in side] == [(2, 0.8), (3, 0.9), (4, 1.0)]
    for r in side:
        assert 0.0 <= r["recall_gsu"] <= 1.0 and 0.0 <= r["recall_pyseismic"] <= 1.0
        for m in ("gsu-mapped", "gsu-memory", "pyseismic"):
            assert r[f"ms_{m}"] > 0
        assert r["ratio_mapped"] == pytest.approx(r["ms_gsu-mapped"] / r["ms_pyseismic"])
        assert r["ratio_memory"] == pytest.approx(r["ms_gsu-memory"] / r["ms_pyseismic"])
    # more query terms opened never lose recall on this small collection
    assert side[0]["recall_gsu"] <= side[2]["recall_gsu"]
    opened = [r for r in recs if r["kind"] == "open" and r["method"] == "gsu-side"]
    assert len(opened) == 1 and opened[0]["open_mapped_s"] > 0 and opened[0]["open_memory_s"] > 0
    written = [json.loads(line) for line in (tmp_path / "out" / "sparse_scale.jsonl").read_text().splitlines()]
    assert sum(r["kind"] == "side" for r in written) == 3


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
