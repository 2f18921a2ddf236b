"""The concurrency contract, for every index kind: threads search while another thread
adds, removes, upserts and compacts, and every result equals the answer of the index
before or after some change (never a mix), never goes back in time within a thread, and holds only ids of the index that the
filter allows, with their exact scores (a self-calibrating FilteredIndex plans with one
calibration there, since two calibrations time the routes apart; calibrating while readers
search has its own test). Plus processes loading a file while another process saves over
it: every load is one whole version.

The in-suite runs are bounded (a few adds, a few hundred searches); the same tests ran
100 times in a row with ``pytest --count 100`` (README "Guarantees").
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import faiss
import numpy as np
import pytest

import _kinds as K
from gsu._rwlock import RWLock
from gsu.index import Filter

N0, BATCH, N_ADDS, KQ, NQ = 1500, 20, 24, 8, 6
READERS = 4
TIMEOUT = 120.0


def _ids(n: int, start: int = 0) -> np.ndarray:
    return (np.arange(start, start + n, dtype=np.int64) * 7 + 3)  # not 0..n-1: the id map is exercised


@pytest.fixture(autouse=True)
def _one_faiss_thread_fast_switching():
    """faiss builds its graph with OpenMP; one thread makes the graph (and so the
    reference answers) the same in the reference index and the concurrent one. A short
    GIL switch interval makes threads interleave between any two bytecodes of an add."""
    prev = faiss.omp_get_max_threads()
    prev_switch = sys.getswitchinterval()
    faiss.omp_set_num_threads(1)
    sys.setswitchinterval(1e-5)
    yield
    sys.setswitchinterval(prev_switch)
    faiss.omp_set_num_threads(prev)


def _same(a, b) -> bool:
    return np.array_equal(a.ids, b.ids) and np.array_equal(a.counts, b.counts) and np.allclose(a.scores, b.scores, rtol=1e-6, atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("kind", K.KINDS)
def _ops(kind: str, ids0: np.ndarray) -> list[tuple]:
    """The writer's 24 changes, each applied whole: adds of new batches, removals of live
    ids, upserts (new vectors for live ids, and new ids), and one compaction."""
    rng = np.random.default_rng(7)
    live = list(ids0.tolist())
    ops: list[tuple] = []
    nxt = N0
    for b in range(N_ADDS):
        if b == N_ADDS - 3:
            ops.append(("compact",))
        elif b % 4 == 1:
            gone = rng.choice(np.asarray(live), BATCH, replace=False)
            live = [i for i in live if i not in set(gone.tolist())]
            ops.append(("remove", gone))
        elif b % 4 == 3:
            old = rng.choice(np.asarray(live), BATCH // 2, replace=False)
            new = _ids(BATCH - BATCH // 2, nxt)
            nxt += new.shape[0]
            live += new.tolist()
            ops.append(("upsert", K.data(kind, BATCH, seed=10 + b), np.concatenate([old, new])))
        else:
            new = _ids(BATCH, nxt)
            nxt += BATCH
            live += new.tolist()
            ops.append(("add", K.data(kind, BATCH, seed=10 + b), new))
    return ops


def _apply(idx, op: tuple) -> None:
    if op[0] == "add":
        idx.add(op[1], op[2])
    elif op[0] == "remove":
        idx.remove(op[1])
    elif op[0] == "upsert":
        idx.upsert(op[1], op[2])
    else:
        idx.compact()


def _writer(idx, ops: list[tuple], errors: list, done: threading.Event):
    """The writer thread's body: the ``N_ADDS`` changes ``ops`` applied to ``idx`` back to back
    and with gaps, its error recorded, ``done`` set at the end."""

    def writer() -> None:
        try:
            for b in range(N_ADDS):
                time.sleep(0.0005 * (b % 2))  # changes back to back and with gaps
                _apply(idx, ops[b])
        except BaseException as e:
            errors.append(e)
        finally:
            done.set()

    return writer


def _run(reader, writer, errors: list) -> None:
    """``READERS`` threads run ``reader(t)`` while one runs ``writer()``; all must finish within
    ``TIMEOUT`` (else a deadlock), and the first error a thread recorded is raised."""
    threads = [threading.Thread(target=reader, args=(t,), daemon=True) for t in range(READERS)]
    threads.append(threading.Thread(target=writer, daemon=True))
    for th in threads:
        th.start()
    deadline = time.monotonic() + TIMEOUT
    for th in threads:
        th.join(max(0.0, deadline - time.monotonic()))
    assert not any(th.is_alive() for th in threads), "deadlock: a thread did not finish"
    if errors:
        raise errors[0]


def _plan_with(fi, cal) -> None:
    """``fi`` plans with the calibration ``cal`` (measured on an identical index) and never
    recalibrates itself."""
    fi.auto_calibrate = False
    fi._calibration = cal
    fi._fits = {}


@pytest.mark.slow
@pytest.mark.parametrize("kind", K.KINDS)
def test_search_while_writing_sees_whole_states(kind):
    """4 threads search (a batch and a single query, under a filter that also allows ids
    still to come — a shared Filter, a new one, or a plain id array, sorted or not — and a single query
    without a filter) while a 5th makes 24 changes (add, remove, upsert, compact); each
    answer must equal the reference answer of one of the 25 states, in non-decreasing
    state order per thread."""
    x0 = K.data(kind, N0, seed=1)
    ids0 = _ids(N0)
    ops = _ops(kind, ids0)
    all_ids = np.concatenate([ids0, _ids(N_ADDS * BATCH, N0)])
    allowed = all_ids[(all_ids // 7) % 5 != 0]  # 80 % of the ids, including ones added later
    q = K.queries(kind, NQ, seed=99)
    q1 = q[:1]
    params = K.PARAMS[kind]

    # reference answers of every state, from an index built the same way without threads
    ref = K.make(kind)
    ref.compact_threshold = 1.0  # compaction only where the writer asks for it
    if kind == "filtered":
        # calibration times the routes: two indexes calibrated apart (one built alone, one
        # while readers search) may plan a query apart and answer it apart for the same
        # state (this test's rare failures until 04faed1): the reference is calibrated once,
        # keeps that calibration through every change, and the threaded index plans with it
        ref.auto_calibrate = False
    ref.add(x0, ids0)
    shared_cal = ref.calibrate(max_seconds=1.0) if kind == "filtered" else None
    refs_batch, refs_one, refs_all = [], [], []
    for b in range(N_ADDS + 1):
        if b:
            _apply(ref, ops[b - 1])
        rb = ref.search(q, KQ, filter=Filter.from_ids(allowed), **params)
        K.check_result(ref, kind, q, rb, KQ, allowed=allowed)
        refs_batch.append(rb)
        refs_one.append(ref.search(q1, KQ, filter=Filter.from_ids(allowed), **params))
        refs_all.append(ref.search(q1, KQ, **params))  # one query, no filter (the lean one-row paths)
    distinct = sum(not _same(refs_batch[i], refs_batch[i + 1]) for i in range(N_ADDS))
    assert distinct >= 2, "the adds must change the answers for the test to mean anything"

    idx = K.make(kind)
    idx.compact_threshold = 1.0
    if shared_cal is not None:
        _plan_with(idx, shared_cal)
    idx.add(x0, ids0)
    shared_filter = Filter.from_ids(allowed)  # one Filter object shared by the threads (its caches too)
    unsorted = np.random.default_rng(5).permutation(allowed)  # the ids in a behavior log's order
    errors: list[BaseException] = []
    done = threading.Event()
    seen: list[list[int]] = [[] for _ in range(READERS)]

    def reader(t: int) -> None:
        last = 0
        after_done = 0
        try:
            while after_done < 3:
                if done.is_set():
                    after_done += 1
                mode = (len(seen[t]) + t) % 3  # 0: the batch, 1: one query, 2: one query without a filter
                # a shared Filter object (its caches too), a new Filter, or a plain id array, sorted or
                # not (compiled without a Filter: a copy, a sort or a bitmap)
                flt = (shared_filter, Filter.from_ids(allowed), allowed.copy(), unsorted.copy())[t % 4] if mode < 2 else None
                res = idx.search(q if mode == 0 else q1, KQ, filter=flt, **params)
                refs = (refs_batch, refs_one, refs_all)[mode]
                states = [s for s in range(last, N_ADDS + 1) if _same(res, refs[s])]
                if not states:
                    older = [s for s in range(last) if _same(res, refs[s])]
                    raise AssertionError(f"thread {t}: answer matches no state from {last} on (older matches: {older})")
                last = states[0]
                seen[t].append(last)
        except BaseException as e:  # reported by the main thread
            errors.append(e)

    _run(reader, _writer(idx, ops, errors, done), errors)
    assert all(len(s) >= 3 for s in seen), "every reader searched"
    assert sum(len(set(s)) for s in seen) > READERS, "the readers saw the index change under them"
    assert _same(idx.search(q, KQ, filter=shared_filter, **params), refs_batch[-1])


@pytest.mark.slow
def test_search_while_calibrating():
    """Readers search a self-calibrating FilteredIndex — a fresh id array, sorted or not, a
    time window on the IVF route, and no filter; one query and a batch — while a writer adds batches (each add recalibrates
    the planner under the write lock) and calls ``calibrate`` between them: every answer is
    a correct answer of the final index (adds only, so an id once returned stays, with its
    vector: allowed, distinct, its exact score, in order), the readers see the index grow,
    and nothing deadlocks. The whole-state test above plans with one fixed calibration;
    this one covers the calibrations themselves under concurrent reads."""
    kind = "filtered"
    x0 = K.data(kind, N0, seed=1)
    ids0 = _ids(N0)
    adds = [(K.data(kind, BATCH * 5, seed=40 + b), _ids(BATCH * 5, N0 + b * BATCH * 5)) for b in range(3)]
    all_ids = np.concatenate([ids0] + [a[1] for a in adds])
    allowed = all_ids[(all_ids // 7) % 5 != 0]
    q = K.queries(kind, NQ, seed=99)
    idx = K.make(kind)
    assert idx.auto_calibrate
    idx.add(x0, ids0)
    got: list[tuple[np.ndarray, object, np.ndarray | None]] = []
    errors: list[BaseException] = []
    done = threading.Event()

    # a time window (one run of rows) on the IVF route: its lists are read as spans
    lo, hi = int(all_ids[300]), int(all_ids[700])
    window = all_ids[(all_ids >= lo) & (all_ids < hi)]

    def reader(t: int) -> None:
        i = 0
        try:
            while not done.is_set() or i < 3:
                mode = (i + t) % 3
                qq = q if mode == 0 else q[t % NQ : t % NQ + 1]
                if t == 3 and mode < 2:
                    got.append((qq, idx.search(qq, KQ, filter=Filter.range(lo, hi), route="ivf"), window))
                else:
                    flt = None if mode == 2 else (allowed.copy() if t % 2 else np.random.default_rng(i).permutation(allowed))
                    got.append((qq, idx.search(qq, KQ, filter=flt), None if flt is None else allowed))
                i += 1
        except BaseException as e:
            errors.append(e)

    def writer() -> None:
        try:
            for b, (x, ids) in enumerate(adds):
                idx.add(x, ids)
                if b == 1:
                    idx.calibrate(max_seconds=1.0)
        except BaseException as e:
            errors.append(e)
        finally:
            done.set()

    _run(reader, writer, errors)
    assert idx.ntotal == all_ids.shape[0] and idx.calibration is not None
    added = np.concatenate([a[1] for a in adds])
    assert any(np.isin(res.ids, added).any() for _, res, _ in got), "the readers saw the index grow"
    for qq, res, flt in got:
        K.check_result(idx, kind, qq, res, KQ, allowed=flt)


def test_warm_up_while_writing():
    """``FilteredIndex.warm_up`` (every route's kernels, the away paths included) runs in
    reader threads, beside searches, while a writer adds, removes and compacts: nothing
    fails or deadlocks, and the final index answers exactly."""
    kind = "filtered"
    x0 = K.data(kind, N0, seed=3)
    ids0 = _ids(N0)
    adds = [(K.data(kind, BATCH * 5, seed=60 + b), _ids(BATCH * 5, N0 + b * BATCH * 5)) for b in range(3)]
    q = K.queries(kind, NQ, seed=98)
    idx = K.make(kind)
    idx.add(x0, ids0)
    errors: list[BaseException] = []
    done = threading.Event()

    def reader(t: int) -> None:
        i = 0
        try:
            while not done.is_set() or i < 2:
                if (i + t) % 2 == 0:
                    idx.warm_up()
                else:
                    idx.search(q[t % NQ], KQ, filter=ids0[:: 3].copy())
                i += 1
        except BaseException as e:
            errors.append(e)

    def writer() -> None:
        try:
            for b, (x, ids) in enumerate(adds):
                idx.add(x, ids)
                if b == 1:
                    idx.remove(ids0[:: 11])
                    idx.compact()
        except BaseException as e:
            errors.append(e)
        finally:
            done.set()

    _run(reader, writer, errors)
    allowed = np.setdiff1d(ids0[:: 3], ids0[:: 11])
    K.check_result(idx, kind, q, idx.search(q, KQ, filter=allowed), KQ, allowed=allowed)


@pytest.mark.slow
def test_search_while_writing_with_walk_seeds(monkeypatch):
    """The same contract for FilteredIndex with its graph walk seeded from the IVF lists
    (on by default only from 2^19 rows; forced on here): the seeds' cached list layout
    follows every add, removal, upsert and compaction while the readers search."""
    import gsu.index.filtered as F

    monkeypatch.setattr(F, "WALK_SEEDS_MIN_ROWS", 0)
    calls = []
    orig = F.FilteredIndex._walk_seeds

    def counted(self, q, which=None):
        out = orig(self, q, which)
        calls.append(out is not None)
        return out

    monkeypatch.setattr(F.FilteredIndex, "_walk_seeds", counted)
    test_search_while_writing_sees_whole_states("filtered")
    assert sum(calls) > 0, "the walks took seeds"


@pytest.mark.slow
@pytest.mark.parametrize("scan", [False, True])
def test_search_while_writing_with_away_budgets(monkeypatch, scan):
    """The same contract for FilteredIndex with the budget of queries away from their
    filter's rows forced on for every query (the test's share at 100 times the
    selectivity, an away budget of 4 times the IVF one): every planned walk gives up
    through its density probe and IVF answers with the away budget — or, with ``scan``
    (``band_away_exact`` everywhere), the IVF kernel leaves every query to the exact scan
    and the walks hand theirs to it — while the writer changes the lists under the readers."""
    import gsu.index.filtered as F
    from gsu.index import planner

    if scan:
        monkeypatch.setattr(planner.PlannerSettings, "away_exact", lambda self, s: True)
        monkeypatch.setattr(planner.PlannerSettings, "away_exacts", lambda self, s: np.ones(np.shape(s), bool))
    monkeypatch.setattr(planner, "AWAY_SHARE", 100.0)
    monkeypatch.setattr(planner.PlannerSettings, "has_away", property(lambda self: True))
    monkeypatch.setattr(planner.PlannerSettings, "away_mult", lambda self, s, run=False: 4.0 * self.ivf_mult(s, run))
    monkeypatch.setattr(planner.PlannerSettings, "away_mults", lambda self, s, run=None: 4.0 * self.ivf_mults(s, run))
    at = planner.PlannerSettings.at  # a single filter's planner reads its budgets and flags at once

    def forced(self, s, run=False):
        ivf, _, ef, ax, hmin, pmin = at(self, s, run)
        return ivf, 4.0 * (1.0 if ivf is None else ivf), ef, scan or ax, hmin, pmin

    monkeypatch.setattr(planner.PlannerSettings, "at", forced)
    # the forced budgets live in the Python planner's hooks: plan with it (the compiled
    # planner reads the settings' own constants; the two agree, test_filtered checks it)
    monkeypatch.setattr(F.FilteredIndex, "_plan_one", F.FilteredIndex._plan_one_py)
    calls = []
    orig = F.FilteredIndex._search_one

    def counted(self, q, k, cf, code, probe, ef, cand, lists, away=None):
        calls.append(away is not None)
        return orig(self, q, k, cf, code, probe, ef, cand, lists, away)

    monkeypatch.setattr(F.FilteredIndex, "_search_one", counted)
    scanned = []
    orig_exact = F.FilteredIndex._exact_rows

    def exact_counted(self, q, k, cf, which, out_r, out_s, counts):
        # queries handed over by IVF's flag or a walk that gave up (a short walk's fill-in has a count)
        scanned.append(int((counts[which] < 0).sum()))
        return orig_exact(self, q, k, cf, which, out_r, out_s, counts)

    monkeypatch.setattr(F.FilteredIndex, "_exact_rows", exact_counted)
    test_search_while_writing_sees_whole_states("filtered")
    assert sum(calls) > 0, "the searches carried an away budget"
    if scan:
        assert sum(scanned) > 0, "the exact scan answered away queries"


def test_rwlock_excludes_writers_and_is_reentrant():
    lock = RWLock()
    state = {"readers": 0, "writing": False, "bad": 0}
    stop = threading.Event()

    def reader():
        while not stop.is_set():
            with lock.read():
                with lock.read():  # reentrant while a writer waits
                    state["readers"] += 1
                    if state["writing"]:
                        state["bad"] += 1
                    time.sleep(0.0002)
                    state["readers"] -= 1

    def writer():
        for _ in range(50):
            with lock.write():
                with lock.write():
                    with lock.read():  # a read inside a write
                        pass
                    state["writing"] = True
                    time.sleep(0.0002)
                    state["writing"] = False

    rs = [threading.Thread(target=reader, daemon=True) for _ in range(4)]
    for r in rs:
        r.start()
    w = threading.Thread(target=writer, daemon=True)
    w.start()
    w.join(30)
    assert not w.is_alive(), "writer starved by continuous readers"
    stop.set()
    for r in rs:
        r.join(10)
    assert state["bad"] == 0
    with lock.read():
        with pytest.raises(RuntimeError, match="cannot modify"):
            lock.acquire_write()
    with pytest.raises(RuntimeError):
        lock.release_read()


def test_searching_thread_cannot_add_to_the_same_index():
    idx = K.make("flat")
    idx.add(K.data("flat", 20, seed=0))
    with idx.lock.read():
        assert idx.search(K.queries("flat", 1, seed=1), 3).counts[0] == 3  # reads nest
        with pytest.raises(RuntimeError, match="cannot modify"):
            idx.add(K.data("flat", 2, seed=2))


_SAVER = textwrap.dedent(
    """
    import sys, numpy as np
    from gsu.index import FlatIndex
    path, n_saves = sys.argv[1], int(sys.argv[2])
    versions = []
    for v in range(2):
        rng = np.random.default_rng(v)
        idx = FlatIndex(8)
        idx.add(rng.standard_normal((3000 + 1000 * v, 8)).astype(np.float32), np.arange(3000 + 1000 * v) * (v + 2) + v)
        versions.append(idx)
    versions[0].save(path)
    print("ready", flush=True)
    for i in range(n_saves):
        versions[i % 2].save(path)
    """
)

_LOADER = textwrap.dedent(
    """
    import sys, numpy as np
    from gsu.index import FlatIndex, load
    path, n_loads, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    want = []
    q = np.random.default_rng(7).standard_normal((4, 8)).astype(np.float32)
    for v in range(2):
        rng = np.random.default_rng(v)
        idx = FlatIndex(8)
        idx.add(rng.standard_normal((3000 + 1000 * v, 8)).astype(np.float32), np.arange(3000 + 1000 * v) * (v + 2) + v)
        want.append(idx.search(q, 5))
    counts = [0, 0]
    for i in range(n_loads):
        idx = load(path, mmap=bool((i + seed) % 2))
        res = idx.search(q, 5)
        hit = [v for v in range(2) if np.array_equal(res.ids, want[v].ids) and np.array_equal(res.scores, want[v].scores)]
        assert len(hit) == 1, f"load {i}: the result matches neither saved version"
        assert idx.ntotal == 3000 + 1000 * hit[0]
        counts[hit[0]] += 1
    print(counts[0], counts[1])
    """
)


def _env() -> dict[str, str]:
    root = str(Path(__file__).resolve().parents[1])
    env = dict(os.environ)
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    env["OMP_NUM_THREADS"] = "1"
    return env


def test_processes_load_while_another_saves(tmp_path):
    """One process saves two versions alternately over one path; two others load it (read
    and memory-mapped) meanwhile: every load is exactly one of the two versions."""
    path = tmp_path / "idx.gsu"
    env = _env()
    saver = subprocess.Popen([sys.executable, "-c", _SAVER, str(path), "300"], env=env, stdout=subprocess.PIPE, text=True)
    assert saver.stdout.readline().strip() == "ready"
    loaders = [subprocess.Popen([sys.executable, "-c", _LOADER, str(path), "80", str(s)], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for s in range(2)]
    outs = [ld.communicate(timeout=300) for ld in loaders]
    saver.wait(timeout=300)
    for ld, (out, err) in zip(loaders, outs):
        assert ld.returncode == 0, err[-2000:]
        a, b = map(int, out.split())
        assert a + b == 80
    assert saver.returncode == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["idx.gsu"], "no temporary file is left behind"


def test_threads_first_use_the_id_table_at_once_beside_an_add():
    """Hashed item ids: several threads compile fresh filters (building the lazily made id
    table at the same moment) while another thread adds items; every search returns only
    allowed ids, and the answers of the ids present before the add equal the serial ones."""
    from gsu.index.hnsw import HNSWIndex

    rng = np.random.default_rng(21)
    n, d = 4000, 16
    x = rng.standard_normal((n + 500, d)).astype(np.float32)
    ids = rng.choice(2**60, n + 500, replace=False).astype(np.int64)
    idx = HNSWIndex(d, M=8, ef_construction=40)
    idx.add(x[:n], ids[:n])
    q = rng.standard_normal((8, d)).astype(np.float32)
    sets = [rng.permutation(ids[:n])[: size] for size in (300, 1500, 3000) for _ in range(4)]
    ref = HNSWIndex(d, M=8, ef_construction=40)
    ref.add(x[:n], ids[:n])
    want = [ref.search(q, 10, filter=s_, ef=400).ids for s_ in sets]
    errors: list[BaseException] = []
    got: dict[int, np.ndarray] = {}
    start = threading.Barrier(5)

    def searcher(t: int) -> None:
        try:
            start.wait()
            for i in range(t, len(sets), 4):
                r = idx.search(q, 10, filter=sets[i], ef=400)
                assert np.isin(r.ids[r.ids >= 0], sets[i]).all()
                got[i] = r.ids
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    def adder() -> None:
        try:
            start.wait()
            idx.add(x[n:], ids[n:])
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=searcher, args=(t,)) for t in range(4)] + [threading.Thread(target=adder)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors, errors
    assert sorted(got) == list(range(len(sets)))
    # the filters name only the first n items: answers are the same before and after the add
    hits = np.mean([np.mean([len(set(a) & set(b)) / 10 for a, b in zip(got[i], want[i])]) for i in range(len(sets))])
    assert hits >= 0.95
    assert len(idx.idmap) == n + 500 and (idx.idmap.rows(ids) == np.arange(n + 500)).all()


@pytest.mark.slow
def test_search_while_writing_with_the_evenness_test(monkeypatch):
    """The same contract for FilteredIndex when its planner sends an even filter to IVF
    without the walk (forced here: the probe band over every selectivity and a gate that
    takes the suite's 80 % filter for too sparse): the test's cached sample design follows
    every add, removal, upsert and compaction while the readers search."""
    import gsu.index.filtered as F

    monkeypatch.setattr(F, "PROBE_GATE", 4.0)
    monkeypatch.setitem(K.PARAMS, "filtered", {"probe_min_selectivity": 0.0, "hnsw_min_selectivity": 0.99,
                                               "exact_max_rows": 4.0})
    verdicts = []
    orig = F.FilteredIndex._walk_shared

    def counted(self, cf, m, share):
        out = orig(self, cf, m, share)
        verdicts.append(out)
        return out

    monkeypatch.setattr(F.FilteredIndex, "_walk_shared", counted)
    designs = set()
    orig_design = F.FilteredIndex._uniform_design

    def tracked(self):
        out = orig_design(self)
        designs.add(id(self.__dict__.get("_uniform_ctx")))
        return out

    monkeypatch.setattr(F.FilteredIndex, "_uniform_design", tracked)
    test_search_while_writing_sees_whole_states("filtered")
    assert False in verdicts, "the evenness test sent filters to IVF without the walk"
    assert len(designs) > 2, "the sample design followed the changing lists"


def test_search_while_writing_with_the_even_budgets(monkeypatch):
    """The same contract when the planner grants the suite's 80 % filter (spread evenly over
    the ids) the budgets and routes of an even filter (``PlannerSettings.even``, forced here
    with settings that give even filters a smaller IVF budget): the evenness verdict and its
    sample design follow every add, removal, upsert and compaction while the readers search."""
    import dataclasses

    import gsu.index.filtered as F
    from gsu.index.planner import Fit

    st = dataclasses.replace(F.PLANNER_DEFAULTS, exact_max_rows=4.0, probe_min_selectivity=2.0, hnsw_min_selectivity=2.0,
                             bands=(0.5, 0.9), band_hnsw_ef=(2.0, 2.0), band_ivf=(2.0, 2.0), band_even_hnsw_ef=(2.0, 2.0),
                             band_even_ivf=(1.0, 1.0))
    assert st.even_pays(0.8)
    monkeypatch.setattr(F.FilteredIndex, "_fit", lambda self, target_recall: Fit(st, (), (), True))
    granted, differ = [], []
    orig = F.FilteredIndex._plan_one

    def counted(self, m, run, k, effort, settings, cf=None):
        out = orig(self, m, run, k, effort, settings, cf)  # the compiled planner
        # ... as the Python planner plans it, on the same layout (the read lock is held)
        if out != F.FilteredIndex._plan_one_py(self, m, run, k, effort, settings, cf):
            differ.append((m, run, out))
        # the evenness test ran in the plan and found the filter even (where, by these
        # settings, the even budgets pay: the plan then takes them, as the Python planner's)
        granted.append(cf is not None and cf._masks.get((F._UNIFORM, id(self), self.hnsw._n)) is True)
        return out

    monkeypatch.setattr(F.FilteredIndex, "_plan_one", counted)
    test_search_while_writing_sees_whole_states("filtered")
    assert True in granted, "the even budgets were granted to the even filter"
    assert not differ, f"the compiled plan differs from the Python planner's: {differ[:3]}"


def test_search_while_writing_with_filters_in_fewer_lists(monkeypatch):
    """The same contract when every filtered search is planned onto IVF with a budget of more
    lists than the index has, so the planner counts the filter's lists
    (``_filter_kernels.in_fewer_lists`` over the row-to-list table of the current layout) and
    sends it to the exact scan, while the writer's adds, removals, upserts and compactions
    rebuild the lists under the readers."""
    import dataclasses

    import gsu.index.filtered as F
    from gsu.index.planner import Fit

    st = dataclasses.replace(F.PLANNER_DEFAULTS, exact_max_rows=4.0, probe_min_selectivity=2.0, hnsw_min_selectivity=2.0,
                             ivf_min_lists=10_000.0)
    monkeypatch.setattr(F.FilteredIndex, "_fit", lambda self, target_recall: Fit(st, (), (), True))
    verdicts, differ = [], []
    orig = F.FilteredIndex._plan_one

    def counted(self, m, run, k, effort, settings, cf=None):
        out = orig(self, m, run, k, effort, settings, cf)  # the compiled planner
        if out != F.FilteredIndex._plan_one_py(self, m, run, k, effort, settings, cf):
            differ.append((m, run, out))
        # above the exact limit (runs' included): counted into fewer lists than the budget
        verdicts.append(out[0] == F.EXACT and m > max(settings.exact_max_rows * effort * settings.exact_run_factor, k))
        return out

    monkeypatch.setattr(F.FilteredIndex, "_plan_one", counted)
    test_search_while_writing_sees_whole_states("filtered")
    assert True in verdicts, "the filters were counted into fewer lists than the budget and scanned"
    assert not differ, f"the compiled plan differs from the Python planner's: {differ[:3]}"


@pytest.mark.slow
def test_exact_route_codes_while_writing():
    """Threads run the exact route of a FilteredIndex wide enough for its 8-bit codes
    (d = 64: the codes are read first and kept between requests, ``_approx()``) with a fresh
    id array per call while another thread adds batches, removes, upserts and compacts: every
    answer is the exact top-k of the filter over the rows of one state (never stale codes)."""
    from gsu.index import FilteredIndex

    d, n0, batch, k = 64, 1200, 60, 5
    rng = np.random.default_rng(21)
    x0 = rng.standard_normal((n0, d)).astype(np.float32)
    idx = FilteredIndex(d, "ip", M=8, ef_construction=32, nlist=8, seed=0, calibrate=False)
    idx.compact_threshold = 1.0
    idx.add(x0, np.arange(n0, dtype=np.int64))
    ops = []
    for b in range(8):  # adds (larger norms: stale codes would misrank), upserts, a removal and a compaction
        y = ((1.0 + b) * rng.standard_normal((batch, d))).astype(np.float32)
        ops.append(("add", y, n0 + b * batch + np.arange(batch, dtype=np.int64)))
    ops.insert(3, ("upsert", (5.0 * rng.standard_normal((10, d))).astype(np.float32), np.arange(0, 100, 10, dtype=np.int64)))
    ops.insert(5, ("remove", None, np.arange(200, 700, dtype=np.int64)))
    ops.insert(6, ("compact", None, None))
    q = rng.standard_normal(d).astype(np.float32)
    flt = np.sort(np.concatenate([np.arange(0, 400, 9), n0 + np.arange(0, 8 * batch, 7)])).astype(np.int64)
    states_vec = []  # the exact top-k ids of the filter in every state
    cur = {i: x0[i] for i in range(n0)}
    for op, y, ids in [(None, None, None)] + ops:
        if op in ("add", "upsert"):
            cur.update({int(i): y[j] for j, i in enumerate(ids)})
        elif op == "remove":
            for i in ids.tolist():
                cur.pop(i, None)
        ok = [i for i in flt.tolist() if i in cur]
        sc = np.array([cur[i] @ q for i in ok], np.float32)
        states_vec.append(set(np.asarray(ok)[np.argsort(-sc, kind="stable")[:k]].tolist()))
    errors: list[BaseException] = []
    done = threading.Event()
    matched: list[int] = []

    def reader() -> None:
        try:
            after = 0
            while after < 3:
                if done.is_set():
                    after += 1
                r = idx.search(q, k, filter=flt.copy())  # a few rows: the exact route
                got = set(r.ids[0].tolist())
                hits = [s for s, want in enumerate(states_vec) if got == want]
                if not hits:
                    raise AssertionError(f"answer {sorted(got)} is the exact top-{k} of no state")
                matched.append(hits[0])
        except BaseException as e:
            errors.append(e)

    def writer() -> None:
        try:
            for op, y, ids in ops:
                time.sleep(0.001)
                if op == "add":
                    idx.add(y, ids)
                elif op == "upsert":
                    idx.upsert(y, ids)
                elif op == "remove":
                    idx.remove(ids)
                else:
                    idx.compact()
        except BaseException as e:
            errors.append(e)
        finally:
            done.set()

    threads = [threading.Thread(target=reader, daemon=True) for _ in range(3)] + [threading.Thread(target=writer, daemon=True)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(TIMEOUT)
    assert not any(th.is_alive() for th in threads), "deadlock: a thread did not finish"
    if errors:
        raise errors[0]
    assert states_vec[-1] == set(idx.search(q, k, filter=flt).ids[0].tolist())
    assert len(set(matched)) > 1, "the readers saw the index change under them"


@pytest.mark.slow
def test_seismic_filtered_search_while_recalibrating():
    """Readers search a SeismicIndex through its filter plan — a fresh id array per call at
    2 %, 10 % and 40 % selectivity and no filter; one query (the fused front) and a batch of
    per-query filters — while a writer adds batches and recalibrates between them
    (``calibrate(filtered=True)``: the operating points and the filter plan are replaced under
    the write lock): every answer is a correct answer of the final index (adds only: an id once
    returned stays, allowed, distinct, with its exact score, in order), the readers see the
    index grow, every calibration leaves a plan, and nothing deadlocks."""
    kind = "seismic"
    x0 = K.data(kind, N0, seed=1)
    ids0 = _ids(N0)
    adds = [(K.data(kind, BATCH * 5, seed=60 + b), _ids(BATCH * 5, N0 + b * BATCH * 5)) for b in range(3)]
    all_ids = np.concatenate([ids0] + [a[1] for a in adds])
    rng = np.random.default_rng(5)
    # over every id the index will hold (those not added yet allow nothing until they are)
    flts = [np.sort(rng.choice(all_ids, int(s * all_ids.shape[0]), replace=False)) for s in (0.02, 0.1, 0.4)]
    q = K.queries(kind, NQ, seed=99)
    idx = K.make(kind)
    idx.add(x0, ids0)
    cal_kw = {"n_queries": 60, "query_cuts": (2, 4, 8), "heap_factors": (0.6, 0.8, 1.0), "max_seconds": 3.0, "seed": 2}
    idx.calibrate(**cal_kw)
    plans = [idx.filter_plan()]
    assert plans[0], "the filtered phase planned at least one selectivity"
    got: list[tuple[object, object, np.ndarray | None]] = []
    errors: list[BaseException] = []
    done = threading.Event()

    def reader(t: int) -> None:
        i = 0
        try:
            while not done.is_set() or i < 3:
                mode = (i + t) % 4
                if mode == 3:  # a batch, one filter per query
                    fl = [flts[(i + j) % 3] for j in range(NQ)]
                    res = idx.search(q, KQ, filter=Filter.per_query(fl))
                    for j in range(NQ):
                        got.append((q[j], _row(res, j), fl[j]))
                else:
                    j = (i + t) % NQ
                    flt = None if (i % 5 == 4) else flts[mode].copy()
                    got.append((q[j], idx.search(q[j], KQ, filter=flt), flt))
                i += 1
        except BaseException as e:
            errors.append(e)

    def writer() -> None:
        try:
            for b, (x, ids) in enumerate(adds):
                idx.add(x, ids)
                idx.calibrate(**{**cal_kw, "seed": 3 + b})
                plans.append(idx.filter_plan())
        except BaseException as e:
            errors.append(e)
        finally:
            done.set()

    _run(reader, writer, errors)
    assert idx.ntotal == all_ids.shape[0] and len(plans) == 4 and all(plans)
    added = np.concatenate([a[1] for a in adds])
    assert any(np.isin(r.ids, added).any() for _, r, _ in got), "the readers saw the index grow"
    for qq, res, flt in got:
        K.check_result(idx, kind, qq, res, KQ, allowed=flt)


def _row(res, j: int):
    """Row ``j`` of a batch result as a one-query result."""
    from gsu.index.result import SearchResult

    return SearchResult(res.ids[j : j + 1], res.scores[j : j + 1], res.counts[j : j + 1])


@pytest.mark.slow
def test_seismic_one_row_front_beside_parallel_batches():
    """Threads search one SeismicIndex at once without a writer: batches (the parallel
    kernel, which releases the GIL while it runs on the index's shared kernel view) beside
    one-row calls (the fused front's direct kernel call, which takes no mutex): every answer
    equals the answer of the same call made alone. Until stop 59 the front ran on the batch
    kernel's view and scratch, and its answers came out wrong or with repeated ids."""
    kind = "seismic"
    idx = K.make(kind)
    idx.add(K.data(kind, N0, seed=1), _ids(N0))
    q = K.queries(kind, 16, seed=7)
    params = K.PARAMS[kind]
    want_batch = idx.search(q, KQ, **params)
    want_one = [idx.search(q[i : i + 1], KQ, **params) for i in range(q.shape[0])]
    errors: list[BaseException] = []
    stop = time.monotonic() + 3.0

    def batches(t: int) -> None:
        try:
            while time.monotonic() < stop:
                res = idx.search(q, KQ, **params)
                assert _same(res, want_batch), "a batch answer changed"
        except BaseException as e:
            errors.append(e)

    def ones(t: int) -> None:
        try:
            i = t
            while time.monotonic() < stop:
                j = i % q.shape[0]
                res = idx.search(q[j : j + 1], KQ, **params)
                assert _same(res, want_one[j]), f"query {j}: {res.ids.tolist()} != {want_one[j].ids.tolist()}"
                i += 1
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=batches, args=(0,), daemon=True)] + [
        threading.Thread(target=ones, args=(t,), daemon=True) for t in range(3)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(TIMEOUT)
    assert not any(th.is_alive() for th in threads), "deadlock: a thread did not finish"
    if errors:
        raise errors[0]


@pytest.mark.slow
@pytest.mark.parametrize("metric", ["ip", "l2"])
def test_requests_in_one_compiled_call_while_adding(monkeypatch, metric):
    """Threads search one query under a plain id array — 80 % of the ids (those still to come
    included), the same ids unordered, a window of consecutive ids — which the lean path
    answers in one compiled call (``_request.ivf_request``: bitmap, plan and IVF scan
    together), while another thread adds batches and removes ids (the call steps aside
    while rows are removed) and compacts. Every answer equals the reference answer of one of
    the states, never going back in time within a thread, and the compiled call answered
    during the run (a few ids within the exact limit too: that route's own compiled call). On ``l2`` too (its ``[q, 1]`` and rescoring inside the call, its kept
    arguments rebuilt after every change)."""
    import dataclasses

    import gsu.index.filtered as F
    from gsu.index import FilteredIndex
    from gsu.index import _request as rq
    from gsu.index import ivf as ivf_mod
    from gsu.index.planner import Fit

    monkeypatch.setattr(ivf_mod, "CENTROID_I8_MIN", 1)  # 8-bit centroid codes at this size
    # IVF for every filter, with a budget of fewer lists than the index has (else the planner
    # scans a filter held in fewer lists exactly)
    st = dataclasses.replace(F.PLANNER_DEFAULTS, exact_max_rows=4.0, probe_min_selectivity=2.0, hnsw_min_selectivity=2.0,
                             ivf_candidates=4.0, ivf_min_lists=2.0)
    # the operating point, kept where the lean path reads it (an add drops what was kept)
    monkeypatch.setattr(F.FilteredIndex, "_fit", lambda self, target_recall: self._fits.setdefault(target_recall, Fit(st, (), (), True)))
    statuses: list[int] = []
    real = rq.request

    def counted(*a):
        r = real(*a)
        statuses.append(int(a[-1][0]))  # info: the status first
        return r

    monkeypatch.setattr(rq, "request", counted)
    exact_calls: list[int] = []
    real_exact = rq.request_exact

    def counted_exact(*a):
        r = real_exact(*a)
        exact_calls.append(r)
        return r

    monkeypatch.setattr(rq, "request_exact", counted_exact)
    d = 16
    rng = np.random.default_rng(3)
    x = rng.standard_normal((N0 + N_ADDS * BATCH, d)).astype(np.float32)
    q = rng.standard_normal((1, d)).astype(np.float32)
    every = np.arange(N0 + N_ADDS * BATCH, dtype=np.int64)
    # ... and a few ids, within the exact limit (its one compiled call: _request.exact_view_request),
    # some of them still to come
    filters = [every[every % 5 != 0], np.random.default_rng(5).permutation(every[every % 5 != 0]),
               np.arange(200, 1300, dtype=np.int64), np.array([N0 + 3 * BATCH + 1, 7, 150, N0 + 1], np.int64)]
    ops = [("remove", np.arange(40 + b, 400, 40, dtype=np.int64)) if b % 6 == 2 else ("compact",) if b % 6 == 4
           else ("add", x[N0 + b * BATCH : N0 + (b + 1) * BATCH], every[N0 + b * BATCH : N0 + (b + 1) * BATCH])
           for b in range(N_ADDS)]

    def build() -> FilteredIndex:
        fi = FilteredIndex(d, metric, M=8, ef_construction=40, nlist=32, seed=0, calibrate=False)
        fi.compact_threshold = 1.0
        fi.add(x[:N0], every[:N0])
        fi._fit(None)
        return fi

    ref = build()
    refs = []  # refs[s][f]: the answer of state s under filter f
    for b in range(N_ADDS + 1):
        if b:
            _apply(ref, ops[b - 1])
        refs.append([ref.search(q[0], KQ, filter=f.copy(), effort=1.0) for f in filters])  # the step-by-step path
    idx = build()
    errors: list[BaseException] = []
    done = threading.Event()
    seen: list[list[int]] = [[] for _ in range(READERS)]

    def reader(t: int) -> None:
        last, after = 0, 0
        try:
            while after < 3:
                if done.is_set():
                    after += 1
                f = (len(seen[t]) + t) % len(filters)
                res = idx.search(q[0], KQ, filter=filters[f].copy())
                states = [s for s in range(last, N_ADDS + 1) if _same(res, refs[s][f])]
                if not states:
                    raise AssertionError(f"thread {t}: answer matches no state from {last} on")
                last = states[0]
                seen[t].append(last)
        except BaseException as e:
            errors.append(e)

    _run(reader, _writer(idx, ops, errors, done), errors)
    assert all(len(s) >= 3 for s in seen), "every reader searched"
    assert rq.DONE in statuses, "the compiled call answered during the run"
    assert exact_calls, "the exact route's compiled call answered during the run"
    assert sum(len(set(s)) for s in seen) > READERS, "the readers saw the index change under them"
