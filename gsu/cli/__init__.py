"""The ``gsu`` command: build, search, info, verify, retrieve, bench, train, demo.

Every sub-command has ``--help``. Heavy imports happen inside the commands, so
``gsu --help`` is instant.

Errors: every failure (bad input, bad file, missing path, a folder where a file was
expected, a request over the limits) prints one line ``gsu COMMAND: error: ...``
naming the input, file and, for text inputs, the line, and exits with status 2
(``-v`` shows the traceback instead). Every file a command writes goes through the
atomic write of :mod:`gsu._format` after all validation.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any, Sequence

log = logging.getLogger("gsu")


class CliError(Exception):
    """A command-line error: printed as one line, exit status 2."""

# suite name -> module with run(*, out_dir, quick, threads)
SUITES: dict[str, tuple[str, str]] = {
    "flat": ("gsu.bench.flat", "exact filtered search: FlatIndex vs faiss IndexFlatIP+selector vs numpy"),
    "filtered": ("gsu.bench.filtered", "filtered ANN at every selectivity vs faiss HNSW/IVF/flat and hnswlib"),
    "lsh": ("gsu.bench.lsh", "ETA Hamming top-k and SDIM bucket aggregation vs exact attention"),
    "sparse": ("gsu.bench.sparse", "Seismic-style blocked inverted index vs pyseismic-lsr and exact"),
    "gsu": ("gsu.bench.gsu_bench", "every retrieval method: latency, recall@k, attention mass"),
    "ctr": ("gsu.bench.ctr", "CTR models over each retrieval method vs full-sequence attention"),
    "gpu": ("gsu.bench.gpu", "exact GSU on the GPU (CPU torch when none): fused top-k vs torch matmul + topk"),
    "serve": ("gsu.bench.serve", "gsu serve under load (search, retrieve) vs a vector database server (Milvus Lite)"),
    "lock": ("gsu.bench.lock", "cost of the readers-writer lock (concurrency contract) per one-query search"),
    "scale": ("gsu.bench.scale", "open time of a memory-mapped index, remove/upsert/compact costs, ShardedIndex on Dask vs one index"),
    "build": ("gsu.bench.build", "FilteredIndex builds vs faiss HNSW / IVF at 10^5 and 10^6 items: time, peak memory, file, open"),
}

def _parse_value(v: str) -> Any:
    try:
        return json.loads(v)
    except json.JSONDecodeError:
        return v


def _params(pairs: Sequence[str] | None) -> dict[str, Any]:
    """``["M=32", "metric=cosine"]`` -> ``{"M": 32, "metric": "cosine"}``."""
    out: dict[str, Any] = {}
    for p in pairs or ():
        if "=" not in p:
            raise CliError(f"--param expects KEY=VALUE, got {p!r}")
        k, v = p.split("=", 1)
        out[k.strip()] = _parse_value(v.strip())
    return out


def cmd_build(a: argparse.Namespace) -> int:
    from gsu._format import check_output_path
    from gsu.datasets.build import build_index, legacy_vocab_path
    from gsu.index import INDEX_KINDS

    params = _params(a.param)
    if a.kind not in INDEX_KINDS:
        raise CliError(f"unknown --kind {a.kind!r}; known: {', '.join(sorted(INDEX_KINDS))}")
    out = check_output_path(a.output)  # a folder as output fails before any work
    idx = build_index(a.input, a.kind, params=params, ids=a.ids or None, key=a.key, metric=a.metric)
    idx.save(out)
    old_sidecar = legacy_vocab_path(out)
    if old_sidecar.is_file():  # written by an older gsu for an earlier build of this path: now stale
        old_sidecar.unlink()
        log.info("removed %s: the vocabulary now lives inside %s", old_sidecar, out)
    print(f"built {type(idx).__name__} with {idx.ntotal} items -> {out}")
    return 0


def cmd_search(a: argparse.Namespace) -> int:
    from gsu.datasets.build import read_ids_file, read_queries
    from gsu.index import Filter, load

    if a.out:
        from gsu._format import check_output_path

        check_output_path(a.out)
    idx = load(a.index, mmap=a.mmap)
    q = read_queries(a.queries, idx, key=a.key, index_path=a.index)
    flt = None
    if a.filter:
        flt = Filter.from_ids(read_ids_file(a.filter, "--filter"))
    params = _params(a.param)
    import inspect

    accepted = [n for n, prm in inspect.signature(idx.search).parameters.items() if prm.kind == prm.KEYWORD_ONLY and n != "filter"]
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        raise CliError(f"--param {unknown[0]}: {type(idx).__name__} has no search setting {unknown[0]!r}; "
                       f"it takes {', '.join(accepted)}")
    res = idx.search(q, a.k, filter=flt, **params)
    if a.out:
        from gsu._format import atomic_savez

        atomic_savez(a.out, ids=res.ids, scores=res.scores, counts=res.counts)
        print(f"wrote {res.ids.shape[0]} result rows -> {a.out}")
    else:
        for i in range(min(res.ids.shape[0], a.show)):
            pairs = ", ".join(f"{int(j)}:{s:.4f}" for j, s in zip(res.ids[i], res.scores[i]) if j >= 0)
            print(f"q{i}: {pairs}")
        if res.ids.shape[0] > a.show:
            print(f"... {res.ids.shape[0] - a.show} more rows (use --out FILE.npz to save all)")
    return 0


def cmd_info(a: argparse.Namespace) -> int:
    from gsu._format import ContainerReader  # the header only: no numba, faiss or torch

    with ContainerReader(a.path) as r:
        hdr = r.header
    size = os.path.getsize(a.path)
    print(f"file:     {a.path} ({size:,} bytes)")
    print(f"kind:     {hdr['kind']}")
    print(f"written:  gsu {hdr.get('gsu_version')}")
    print("config:   " + json.dumps(hdr["config"], sort_keys=True))
    print("arrays:")
    for m in hdr["arrays"]:
        print(f"  {m['name']:<24} {m['dtype']:<6} {tuple(m['shape'])}")
    return 0


_BENCH_LOG_OPTIONS = ("data", "schema", "item_embeddings", "negatives", "sample_rate", "min_history", "data_seed")
_LOG_SUITES = ("ctr", "gsu")  # suites whose --data is a behavior log


def cmd_verify(a: argparse.Namespace) -> int:
    import time

    from gsu._format import ContainerReader
    from gsu.index import INDEX_KINDS, load

    t0 = time.perf_counter()
    with ContainerReader(a.path) as r:
        r.verify()  # the whole-file SHA-256
        kind, per_array = r.kind, r.per_array
        if per_array:
            r.verify_arrays(r.arrays(mmap=True))
    checks = ["file sha256"] + (["array sha256"] if per_array else [])
    if kind in INDEX_KINDS:
        load(a.path, mmap=True, verify=True).verify()  # structure and values of the index
        checks += ["structure", "values"]
    else:
        from gsu.retrieval import BehaviorStore, ItemTable
        from gsu.retrieval.bse import BSE_KIND, BehaviorSequenceEncoder

        loaders = {"behavior_store": BehaviorStore.load, "item_table": ItemTable.load, BSE_KIND: BehaviorSequenceEncoder.load}
        if kind in loaders:
            loaders[kind](a.path, mmap=True, verify=False)
            checks.append("structure")
    size = os.path.getsize(a.path)
    print(f"{a.path}: ok ({kind}, {size:,} bytes; {', '.join(checks)}; {time.perf_counter() - t0:.2f} s)")
    return 0


def cmd_bench(a: argparse.Namespace) -> int:
    names = list(SUITES) if a.suite == "all" else [a.suite]
    out = Path(a.out)
    log = None
    defaults = {"min_history": 1, "data_seed": 0}
    if a.suite in _LOG_SUITES and a.data is not None:  # suites ctr and gsu: --data is a behavior log
        if a.filters is not None:
            raise CliError(f"--filters: suite {a.suite} takes a behavior log as --data, not filters")
        log = {k: getattr(a, k) for k in _BENCH_LOG_OPTIONS}
        if a.suite == "gsu":
            given = [k for k in ("negatives", "sample_rate") if getattr(a, k) != defaults.get(k)]
            if given:
                raise CliError(f"--{given[0].replace('_', '-')}: suite gsu does not sample CTR examples (suite ctr does)")
    else:
        given = [k for k in _BENCH_LOG_OPTIONS if k != "data" and getattr(a, k) != defaults.get(k)]
        if given:
            raise CliError(f"--{given[0].replace('_', '-')}: needs --data LOG with suite ctr or gsu (the suite on your own log)")
    for name in names:
        mod_name, _ = SUITES[name]
        try:
            mod = importlib.import_module(mod_name)
        except ModuleNotFoundError as e:
            if e.name == mod_name:
                raise CliError(f"suite {name!r} is not available in this build ({mod_name} missing)")
            raise
        if log is not None:
            print(f"== suite {name} ==", flush=True)
            mod.run(out_dir=out, quick=a.quick, threads=a.threads, log=log)
            continue
        outside = {k: v for k, v in (("data", a.data), ("filters", a.filters)) if v is not None}
        if outside:
            import inspect

            takes = inspect.signature(mod.run).parameters
            missing = [f"--{k}" for k in outside if k not in takes]
            if missing:
                raise CliError(f"suite {name!r} does not take {' '.join(missing)} (suites taking --data: "
                               f"{', '.join(s for s, (m, _) in SUITES.items() if _takes_data(m))})")
            from gsu.datasets.registry import parse_spec

            parse_spec(a.data)  # a malformed spec fails here, before any suite starts
        print(f"== suite {name} ==", flush=True)
        mod.run(out_dir=out, quick=a.quick, threads=a.threads, **outside)
    print(f"results in {out}/")
    return 0


def _takes_data(mod_name: str) -> bool:
    import inspect

    try:
        return "data" in inspect.signature(importlib.import_module(mod_name).run).parameters
    except ImportError:
        return False


def cmd_retrieve(a: argparse.Namespace) -> int:
    from gsu.cli import retrieve

    return int(retrieve.main(a) or 0)


def cmd_train(a: argparse.Namespace) -> int:
    from gsu.cli import train

    return int(train.main(a) or 0)


def cmd_serve(a: argparse.Namespace) -> int:
    try:
        from gsu.serve import config_from_specs, load_config, serve
    except ModuleNotFoundError as e:
        raise SystemExit(f"gsu serve: needs the serve extra (pip install 'gsu[serve]'): {e}")
    overrides = {k: v for k, v in (("host", a.host), ("port", a.port), ("workers", a.workers), ("threads", a.threads),
                                   ("max_batch", a.max_batch), ("max_wait_ms", a.max_wait_ms), ("max_k", a.max_k)) if v is not None}
    if a.config:
        if a.index or a.store:
            raise SystemExit("gsu serve: give a CONFIG file or --index/--store, not both")
        cfg = load_config(a.config)
        if overrides:
            from dataclasses import asdict, replace

            from gsu.serve.config import ServerSettings

            cfg = replace(cfg, server=ServerSettings(**{**asdict(cfg.server), **overrides}))
    elif a.index or a.store:
        cfg = config_from_specs(a.index, a.store, server=overrides)
    else:
        raise SystemExit("gsu serve: give a CONFIG file or at least one --index NAME=PATH.gsu")
    serve(cfg, log_level="info" if a.verbose else "warning")
    return 0


def cmd_demo(a: argparse.Namespace) -> int:
    from gsu.demo import run_demo

    run_demo(out_dir=Path(a.out), quick=a.quick, seed=a.seed, threads=a.threads,
             progress=None if a.progress == "auto" else a.progress == "bar")
    return 0


def _unavailable(what: str) -> Any:
    def fail(a: argparse.Namespace) -> int:
        raise CliError(f"{what} is not available in this build")

    return fail


def _command_of(argv: Sequence[str]) -> str | None:
    """The sub-command named in ``argv`` (the first argument that is not an option)."""
    for tok in argv:
        if tok == "--":
            return None
        if not tok.startswith("-"):
            return tok
    return None


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The argument parser; the options of ``retrieve``/``train`` are added only when
    ``argv`` names that command (``argv=None``: all of them, importing their layers)."""
    from gsu import __version__

    command = _command_of(argv) if argv is not None else None
    if argv is None:
        command = "*"

    p = argparse.ArgumentParser(prog="gsu", description="gsu: retrieval engine for the general search unit of long-sequence CTR models")
    p.add_argument("--version", action="version", version=f"gsu {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="log progress at INFO level")
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND")

    b = sub.add_parser("build", help="build an index from an embedding file", description="Build an index from an embedding file and save it.")
    b.add_argument("input", help="embeddings: .npy .fvecs .ivecs .bvecs .hdf5 .parquet (dense) or .npz .jsonl (sparse)")
    b.add_argument("output", help="index file to write (atomically)")
    b.add_argument("--kind", default="flat", help="index kind: flat, filtered, hnsw, ivf, simhash (dense); seismic, sparse_flat (sparse) (default flat)")
    b.add_argument("--metric", default=None, help="ip, cosine or l2 (dense kinds; filtered: ip or cosine)")
    b.add_argument("--ids", default=None, help=".npy of int64 external ids, one per row (default 0..n-1)")
    b.add_argument("--key", default=None, help="dataset inside .hdf5 (default 'train') or column of .parquet")
    b.add_argument("--param", action="append", metavar="KEY=VALUE", help="build setting, repeatable (e.g. M=32, nlist=1024)")
    b.set_defaults(func=cmd_build)

    s = sub.add_parser("search", help="search an index with a file of queries", description="Top-k search; prints results or writes an .npz (ids, scores, counts).")
    s.add_argument("index", help="index file written by `gsu build`")
    s.add_argument("queries", help="queries file (same formats as build)")
    s.add_argument("-k", type=int, default=10, help="results per query (default 10)")
    s.add_argument("--filter", default=None, help=".npy of allowed item ids (shared by all queries)")
    s.add_argument("--key", default=None, help="dataset inside .hdf5 (e.g. 'test') or column of .parquet")
    s.add_argument("--param", action="append", metavar="KEY=VALUE", help="search setting, repeatable: filtered effort=2 or route=ivf, hnsw ef=64, ivf nprobe=16, "
                   "seismic query_cut=10 heap_factor=0.9 (an unknown one lists what the index takes)")
    s.add_argument("--out", default=None, help="write results to this .npz")
    s.add_argument("--show", type=int, default=10, help="rows to print when --out is not given")
    s.add_argument("--mmap", action="store_true", help="memory-map the index instead of reading it")
    s.set_defaults(func=cmd_search)

    i = sub.add_parser("info", help="print an index file's header", description="Show the kind, build config and arrays of a saved file without loading it.")
    i.add_argument("path")
    i.set_defaults(func=cmd_info)

    v = sub.add_parser("verify", help="check a saved file's checksums, structure and values",
                       description="Check every checksum of a saved file (whole file and each array), then load it and check its "
                                   "structure and (for indexes) its values. Prints one line; exit status 2 on any damage.")
    v.add_argument("path")
    v.set_defaults(func=cmd_verify)

    # retrieve and train take their options from their layers (numpy/numba, torch): those
    # imports happen only when that command is the one being parsed, so `gsu --help`,
    # `gsu info` and the other commands start without them
    r = sub.add_parser("retrieve", help="retrieve top-k behaviors for (user, target) requests", description="Run a GSU method over a behavior store for a file of requests.")
    r.set_defaults(func=cmd_retrieve)
    if command in ("retrieve", "*"):
        from gsu.cli import retrieve

        retrieve.add_arguments(r)

    t = sub.add_parser("train", help="train a CTR model over a retrieval method", description="Train the compact target-attention model on retrieved behaviors.")
    t.set_defaults(func=cmd_train)
    if command in ("train", "*"):
        try:
            from gsu.cli import train

            train.add_arguments(t)
        except ImportError:
            t.set_defaults(func=_unavailable("the CTR layer"))

    be = sub.add_parser("bench", help="run a benchmark suite", description="Run a benchmark suite; results as JSON lines + PNG in --out.\n\nSuites:\n"
                        + "\n".join(f"  {k:<9} {v[1]}" for k, v in SUITES.items()), formatter_class=argparse.RawDescriptionHelpFormatter)
    be.add_argument("suite", choices=[*SUITES, "all"])
    be.add_argument("--out", default="results", help="output folder (default results/)")
    be.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    be.add_argument("--threads", type=int, default=1, help="threads pinned for BLAS/numba/torch/faiss (default 1)")
    be.add_argument("--data", default=None, metavar="SPEC",
                    help="run on this data set instead of the built-in ones (suites ctr and gsu: a .parquet/.csv behavior log with --schema, a Taobao UserBehavior CSV (gsu), a MovieLens folder, 'movielens', 'taobao' (gsu) or 'synthetic' (ctr); other suites: gen:NAME?key=value&..., file:PATH or PATH[?key=value&...] "
                         "(.npy .fvecs .hdf5 .parquet .fbin .u8bin dense; .npz .jsonl .csr sparse); see gsu.datasets.registry)")
    be.add_argument("--filters", default=None, metavar="SPEC",
                    help="filters for --data: a .jsonl/.npz/.parquet file with one id list per query, "
                         "or attr:SOURCE?sel=0.001,0.01[&column=NAME]")
    lg = be.add_argument_group("suites ctr and gsu on your own log (ctr: the task `gsu train` builds with the same options)")
    lg.add_argument("--schema", default=None, help="JSON file naming the log's columns (see `gsu train --help`)")
    lg.add_argument("--item-embeddings", default=None, help="item vectors: .parquet (item, vector) or .npz (ids, vectors)")
    lg.add_argument("--negatives", type=int, default=None, help="sampled negatives per logged sample (as gsu train)")
    lg.add_argument("--sample-rate", type=float, default=None, help="share of log rows kept as samples (as gsu train)")
    lg.add_argument("--min-history", type=int, default=1, help="visible behaviors a log sample needs (default 1; suite gsu: "
                    "behaviors a user needs, default 2k)")
    lg.add_argument("--data-seed", type=int, default=0, help="seed of the data sampling (default 0)")
    be.set_defaults(func=cmd_bench)

    sv = sub.add_parser("serve", help="serve indexes and behavior stores over HTTP",
                        description="Serve saved indexes (search) and behavior stores (retrieve) over HTTP with micro-batching, "
                                    "hot swap of replaced index files and Prometheus metrics. Binds 127.0.0.1 unless --host says otherwise.")
    sv.add_argument("config", nargs="?", default=None, help="a .toml or .json config (see gsu.serve.config)")
    sv.add_argument("--index", action="append", metavar="NAME=PATH.gsu", help="serve this index file under NAME (repeatable)")
    sv.add_argument("--store", action="append", metavar="NAME=BEHAVIORS.gsu,ITEMS.gsu", help="serve this behavior store (repeatable)")
    sv.add_argument("--host", default=None, help="address to bind (default 127.0.0.1)")
    sv.add_argument("--port", type=int, default=None, help="port (default 8000)")
    sv.add_argument("--workers", type=int, default=None, help="worker processes sharing the memory-mapped files (default 1)")
    sv.add_argument("--threads", type=int, default=None, help="numba/BLAS threads per worker (default 1)")
    sv.add_argument("--max-batch", type=int, default=None, help="query rows per micro-batch (default 64)")
    sv.add_argument("--max-wait-ms", type=float, default=None, help="longest micro-batch wait for requests still arriving (default 0)")
    sv.add_argument("--max-k", type=int, default=None, help="largest k a request may ask for (default 1000)")
    sv.set_defaults(func=cmd_serve)

    d = sub.add_parser("demo", help="run the main job on the built-in synthetic default", description="The main job end to end on a synthetic default: item embeddings to a file, "
                       "`gsu build` of a filtered index, filtered search with per-user filters checked against the exact answer, "
                       "retrieval with every GSU method against Exact, a CTR comparison against full attention; "
                       "writes demo.jsonl and demo.png.")
    d.add_argument("--out", default="results/demo", help="output folder (default results/demo)")
    d.add_argument("--quick", action="store_true", help="a smaller, faster run (a smoke test for CI)")
    d.add_argument("--seed", type=int, default=0, help="seed of the data, the sampled users and training (default 0)")
    d.add_argument("--threads", type=int, default=1, help="numba/BLAS/torch threads (default 1)")
    d.add_argument("--progress", choices=("auto", "bar", "lines"), default="auto",
                   help="a progress bar (bar), one line per stage (lines), or a bar only on a terminal (auto, default)")
    d.set_defaults(func=cmd_demo)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    args = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(args)
    a = parser.parse_args(args)  # usage errors: argparse prints them and exits with 2
    logging.basicConfig(level=logging.INFO if a.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(a.func(a) or 0)
    except KeyboardInterrupt:
        print(f"gsu {a.cmd}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # every error is one line and exit status 2; -v shows the traceback
        if a.verbose:
            raise
        from gsu._format import one_line

        known = isinstance(e, (CliError, ValueError, TypeError, OSError, KeyError, LookupError, OverflowError, MemoryError))
        msg = one_line(str(e) if not isinstance(e, KeyError) else f"missing {e}", limit=1000)
        if isinstance(e, MemoryError):
            msg = "out of memory" + (f" ({msg})" if msg else "") + ": lower k or the batch size (see gsu.set_limits)"
        elif not known:
            msg = f"{type(e).__name__}: {msg} (run with -v for the traceback)"
        print(f"gsu {a.cmd}: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
