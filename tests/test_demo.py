"""`gsu demo --quick`: every stage runs, the files and the figure are written, the exactness
checks hold, the tables carry real uncertainties, and the output reads well in a log."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

pytest.importorskip("torch")


@pytest.fixture(scope="module")
def quick_demo(tmp_path_factory):
    from gsu.demo import run_demo

    out = tmp_path_factory.mktemp("demo")
    lines: list[str] = []
    res = run_demo(out_dir=out, quick=True, seed=0, threads=1, progress=False, say=lines.append)
    return out, res, lines


def test_stages_print_one_line_each_in_order(quick_demo):
    from gsu.demo import STAGES

    _, res, lines = quick_demo
    heads = [ln for ln in lines if ln.startswith("[")]
    assert [h.split("]")[0] + "]" for h in heads] == [f"[{i + 1}/{len(STAGES)}]" for i in range(len(STAGES))]
    assert [h.split()[1] for h in heads] == list(STAGES)
    assert set(res["stages"]) == set(STAGES)
    text = "\n".join(lines)
    assert "\r" not in text  # no carriage-return progress fragments in a log
    assert "± 0.0000" not in text  # one seed: uncertainties come from the bootstrap, never a fake zero
    summary = res["summary"]
    assert 3 <= len(summary) <= 4 and lines[-len(summary):] == summary


def test_files_and_figure(quick_demo):
    from gsu.datasets import read_embeddings
    from gsu.index import info, load

    out, res, _ = quick_demo
    for name in ("items.npy", "items.gsu", "demo.jsonl", "demo.png"):
        assert (out / name).is_file(), name
    emb = read_embeddings(out / "items.npy")
    assert emb.shape == (res["size"]["n_items"], 32) and emb.dtype == np.float32
    assert info(out / "items.gsu")["kind"] == "filtered"
    assert load(out / "items.gsu").ntotal == emb.shape[0]
    png = (out / "demo.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000
    kinds = [json.loads(line)["kind"] for line in (out / "demo.jsonl").read_text().splitlines()]
    assert {"search", "retrieval", "retrieval_info", "ctr", "ctr_info", "run"} <= set(kinds)


def test_filtered_search_is_checked_against_the_exact_answer(quick_demo):
    _, res, _ = quick_demo
    s = res["search"]
    assert s["index"] == "FilteredIndex"
    assert s["ids_outside_filter"] == 0 and s["exact_mismatches"] == 0
    assert s["queries"] == res["size"]["search_users"] * res["size"]["search_queries"]
    assert 0.9 <= s["recall"] <= 1.0


def test_retrieval_table_against_exact(quick_demo):
    _, res, _ = quick_demo
    info = res["retrieval_info"]
    assert info["exact_mismatches"] == 0 and info["positions_after_cut"] == 0 and info["targets"] > 0
    rows = {r["method"]: r for r in res["retrieval"]}
    assert {"Exact", "SIM-hard", "SIM-soft (scan)", "SIM-soft (index)", "MUSE-cosine", "SDIM", "Hybrid hard+soft"} <= set(rows)
    assert any(m.startswith("ETA") for m in rows)
    assert rows["Exact"]["recall"] == pytest.approx(1.0) and rows["Exact"]["attention_mass"] <= 1.0
    # SIM-soft searches the attention space by inner product: it is the exact top-k
    assert rows["SIM-soft (scan)"]["recall"] >= 0.999 and rows["SIM-soft (index)"]["recall"] >= 0.999
    for name, r in rows.items():
        assert r["ms_per_request"] > 0
        if name == "SDIM":
            assert math.isnan(r["recall"]) and -1.0 <= r["cosine_to_exact_attention"] <= 1.0
        else:
            assert 0.0 <= r["recall"] <= 1.0
            # no method keeps more planted attention mass than the exact top-k
            assert r["attention_mass"] <= rows["Exact"]["attention_mass"] + 1e-9


def test_ctr_table(quick_demo):
    _, res, _ = quick_demo
    rows, info = res["ctr"], res["ctr_info"]
    assert rows[0]["method"] == "full" and rows[0]["auc_lost"] is None
    assert [r["method"] for r in rows[1:]] == list(res["size"]["ctr_methods"])
    assert 0.5 < info["oracle"] <= 1.0 and info["full_gap_to_oracle"] == pytest.approx(info["oracle"] - rows[0]["auc"])
    for r in rows:
        assert 0.0 < r["auc"] < 1.0 and r["auc_se"] > 0
        if r["method"] != "full":
            assert r["auc_lost"] == pytest.approx(rows[0]["auc"] - r["auc"], abs=1e-9)
            assert r["auc_lost_se"] > 0
            assert r["flops_ratio"] > 1.0  # every method attends over fewer behaviors than full attention


def test_paired_bootstrap_matches_definition():
    from gsu.demo import paired_bootstrap
    from gsu.ctr.metrics import auc

    rng = np.random.default_rng(0)
    users = np.repeat(np.arange(40), 25)
    y = rng.random(users.size) < 0.3
    p_ref = y + rng.normal(0, 0.8, users.size)
    p = y + rng.normal(0, 1.5, users.size)
    d, se_a, se_d = paired_bootstrap(y, p_ref, p, users, n=100, seed=0)
    assert d == pytest.approx(auc(y, p_ref) - auc(y, p))
    assert 0 < se_a < 0.1 and 0 < se_d < 0.1
    # identical scores: the paired difference is exactly 0 in every resample
    d0, _, se0 = paired_bootstrap(y, p, p, users, n=20, seed=0)
    assert d0 == 0.0 and se0 == 0.0


def test_cli_demo_arguments():
    from gsu.cli import build_parser

    a = build_parser().parse_args(["demo", "--quick", "--seed", "3", "--progress", "lines", "--out", "x"])
    assert (a.quick, a.seed, a.progress, a.out) == (True, 3, "lines", "x")


def test_demo_module_does_not_import_the_benchmarks():
    import ast
    from pathlib import Path

    import gsu.demo as demo

    tree = ast.parse(Path(demo.__file__).read_text())
    names = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    names += [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    assert names and not [m for m in names if m == "gsu.bench" or m.startswith("gsu.bench.")]


def test_progress_plain_lines_without_a_terminal(capsys):
    from gsu.demo import _Progress

    pg = _Progress(["a", "b"], bar=None, say=None)  # pytest's stdout is not a terminal: plain lines
    for s in ("a", "b"):
        pg.start(s)
        pg.done(s, f"stage {s} done")
    pg.close()
    out = capsys.readouterr().out
    assert "\r" not in out
    assert [ln.split(" (")[0] for ln in out.splitlines()] == ["[1/2] a          stage a done", "[2/2] b          stage b done"]


def test_progress_bar_when_asked(capsys):
    from gsu.demo import _Progress

    pg = _Progress(["a"], bar=True, say=None)
    assert pg.bar is not None
    pg.start("a")
    pg.done("a", "x")
    pg.close()
    assert "[1/1] a" in capsys.readouterr().out
