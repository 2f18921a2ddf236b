"""``gsu bench build --quick``: every library built, saved and opened in its own process,
the record's fields present and gsu's default search at recall >= 0.9 on its check."""

import json

import pytest

from gsu.cli import main


@pytest.mark.slow
def test_bench_build_quick(tmp_path, monkeypatch):
    monkeypatch.setenv("GSU_BUILD_FILES", str(tmp_path / "files"))
    from gsu.bench import build

    rows = build.run(out_dir=tmp_path / "out", quick=True, threads=1, sizes=(4_000,), cache=tmp_path / "cache",
                     say=lambda s: None)
    assert [r["lib"] for r in rows] == ["gsu", "faiss-hnsw", "faiss-ivf"]
    for r in rows:
        assert r["n"] == 4_000 and r["build_s"] > 0 and r["peak_rss_mb"] >= r["data_rss_mb"] > 0
        assert r["file_bytes"] > 4_000 * 32 * 4 and r["open_ms_median"] > 0 and r["commit"] is not None
    g = rows[0]
    cells = {"random_0.001", "random_0.01", "random_0.1", "random_0.5", "range_0.01", "range_0.1"}
    # rows plus noise, and on the clustered catalog fresh draws from its mixture on the same filters
    assert g["calibrated"] and set(g["search"]) == cells | {c + "_mixture" for c in cells}
    assert min(v["recall"] for v in g["search"].values()) >= 0.9
    # one copy of the vectors: gsu's file is faiss HNSW's plus codes and ids, not a second copy
    assert g["file_bytes"] < rows[1]["file_bytes"] + 4_000 * 32 * 4 * 0.6
    lines = [json.loads(x) for x in (tmp_path / "out" / "build.jsonl").read_text().splitlines()]
    assert len(lines) == 3 and (tmp_path / "out" / "build.png").stat().st_size > 0


def test_bench_build_is_a_suite():
    from gsu.cli import SUITES

    assert SUITES["build"][0] == "gsu.bench.build"
    with pytest.raises(SystemExit):
        main(["bench", "build", "--help"])
