"""The ``gsu`` command: build, search, info, retrieve, bench, train, demo.

Every sub-command has ``--help``. Heavy imports happen inside the commands, so
``gsu --help`` is instant.
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
}

SPARSE_KINDS = ("seismic", "sparse_flat")
DENSE_SUFFIXES = (".npy", ".fvecs", ".ivecs", ".bvecs", ".hdf5", ".h5", ".parquet")
SPARSE_SUFFIXES = (".npz", ".jsonl")


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
            raise SystemExit(f"gsu: --param expects KEY=VALUE, got {p!r}")
        k, v = p.split("=", 1)
        out[k.strip()] = _parse_value(v.strip())
    return out


def _read_vectors(path: str, key: str | None) -> Any:
    from gsu.datasets import read_embeddings

    kw = {"key": key} if key else {}
    return read_embeddings(path, **kw)


def _vocab_path(index_path: str) -> Path:
    """Where `gsu build` keeps the token vocabulary of an index built from JSON lines."""
    return Path(str(index_path) + ".vocab.json")


def cmd_build(a: argparse.Namespace) -> int:
    import numpy as np

    from gsu.index import INDEX_KINDS

    params = _params(a.param)
    cls = INDEX_KINDS.get(a.kind)
    if cls is None:
        raise SystemExit(f"gsu build: unknown --kind {a.kind!r}; known: {', '.join(sorted(INDEX_KINDS))}")
    suffix = Path(a.input).suffix.lower()
    ids = np.load(a.ids) if a.ids else None
    if a.kind in SPARSE_KINDS:
        from gsu.datasets.io import read_sparse, read_sparse_jsonl, write_vocabulary

        if suffix == ".jsonl":
            csr, file_ids, vocab = read_sparse_jsonl(a.input)
            write_vocabulary(_vocab_path(a.output), vocab)
        else:
            csr, file_ids = read_sparse(a.input)
        idx = cls(csr.shape[1], **params)
        idx.add(csr, ids if ids is not None else file_ids)
    else:
        if suffix in SPARSE_SUFFIXES and suffix != ".npz":
            raise SystemExit(f"gsu build: {a.input} holds sparse vectors; use a sparse --kind (seismic, sparse_flat)")
        x = _read_vectors(a.input, a.key)
        if "metric" not in params and a.metric:
            params["metric"] = a.metric
        idx = cls(x.shape[1], **params)
        idx.add(x, ids)
    idx.save(a.output)
    print(f"built {type(idx).__name__} with {idx.ntotal} items -> {a.output}")
    return 0


def cmd_search(a: argparse.Namespace) -> int:
    import numpy as np

    from gsu.index import Filter, load

    idx = load(a.index, mmap=a.mmap)
    suffix = Path(a.queries).suffix.lower()
    if idx.KIND in SPARSE_KINDS:
        from gsu.datasets.io import read_sparse, read_vocabulary

        vocab = None
        if suffix == ".jsonl":
            vp = _vocab_path(a.index)
            if not vp.exists():
                raise SystemExit(f"gsu search: {a.queries} holds tokens but {vp} (written by `gsu build` from .jsonl) is missing")
            vocab = read_vocabulary(vp)
        q, _ = read_sparse(a.queries, vocabulary=vocab)
        if q.shape[1] < idx.dim:  # the queries' vocabulary may stop short of the index's
            import scipy.sparse as sp

            q = sp.csr_matrix((q.data, q.indices, q.indptr), shape=(q.shape[0], idx.dim))
    else:
        q = _read_vectors(a.queries, a.key)
    flt = None
    if a.filter:
        flt = Filter.from_ids(np.load(a.filter))
    res = idx.search(q, a.k, filter=flt, **_params(a.param))
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
    from gsu.index import info

    hdr = info(a.path)
    size = os.path.getsize(a.path)
    print(f"file:     {a.path} ({size:,} bytes)")
    print(f"kind:     {hdr['kind']}")
    print(f"written:  gsu {hdr.get('gsu_version')}")
    print("config:   " + json.dumps(hdr["config"], sort_keys=True))
    print("arrays:")
    for m in hdr["arrays"]:
        print(f"  {m['name']:<24} {m['dtype']:<6} {tuple(m['shape'])}")
    return 0


def cmd_bench(a: argparse.Namespace) -> int:
    names = list(SUITES) if a.suite == "all" else [a.suite]
    out = Path(a.out)
    for name in names:
        mod_name, _ = SUITES[name]
        try:
            mod = importlib.import_module(mod_name)
        except ModuleNotFoundError as e:
            if e.name == mod_name:
                raise SystemExit(f"gsu bench: suite {name!r} is not available in this build ({mod_name} missing)")
            raise
        print(f"== suite {name} ==", flush=True)
        mod.run(out_dir=out, quick=a.quick, threads=a.threads)
    print(f"results in {out}/")
    return 0


def cmd_retrieve(a: argparse.Namespace) -> int:
    from gsu.retrieval import cli_support

    return int(cli_support.main(a) or 0)


def cmd_train(a: argparse.Namespace) -> int:
    from gsu.ctr import cli_support

    return int(cli_support.main(a) or 0)


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
    try:
        from gsu.ctr.demo import run_demo
    except ModuleNotFoundError as e:
        if e.name not in ("gsu.ctr.demo",):
            raise
        from gsu.bench.flat import run as run_flat

        run_flat(out_dir=Path(a.out), quick=a.quick, threads=a.threads)
        return 0
    run_demo(out_dir=Path(a.out), quick=a.quick)
    return 0


def build_parser() -> argparse.ArgumentParser:
    from gsu import __version__

    p = argparse.ArgumentParser(prog="gsu", description="gsu: retrieval engine for the general search unit of long-sequence CTR models")
    p.add_argument("--version", action="version", version=f"gsu {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="log progress at INFO level")
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND")

    b = sub.add_parser("build", help="build an index from an embedding file", description="Build an index from an embedding file and save it.")
    b.add_argument("input", help="embeddings: .npy .fvecs .ivecs .bvecs .hdf5 .parquet (dense) or .npz .jsonl (sparse)")
    b.add_argument("output", help="index file to write (atomically)")
    b.add_argument("--kind", default="flat", help="index kind: flat, filtered, hnsw, ivf, simhash (dense); seismic, sparse_flat (sparse) (default flat)")
    b.add_argument("--metric", default=None, help="ip or cosine (dense kinds)")
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
    s.add_argument("--param", action="append", metavar="KEY=VALUE", help="search setting, repeatable (e.g. ef=64, query_cut=10)")
    s.add_argument("--out", default=None, help="write results to this .npz")
    s.add_argument("--show", type=int, default=10, help="rows to print when --out is not given")
    s.add_argument("--mmap", action="store_true", help="memory-map the index instead of reading it")
    s.set_defaults(func=cmd_search)

    i = sub.add_parser("info", help="print an index file's header", description="Show the kind, build config and arrays of a saved file without loading it.")
    i.add_argument("path")
    i.set_defaults(func=cmd_info)

    r = sub.add_parser("retrieve", help="retrieve top-k behaviors for (user, target) requests", description="Run a GSU method over a behavior store for a file of requests.")
    try:
        from gsu.retrieval import cli_support as rcs

        rcs.add_arguments(r)
        r.set_defaults(func=cmd_retrieve)
    except ImportError:
        r.set_defaults(func=lambda a: sys.exit("gsu retrieve: the retrieval layer is not available in this build"))

    t = sub.add_parser("train", help="train a CTR model over a retrieval method", description="Train the compact target-attention model on retrieved behaviors.")
    try:
        from gsu.ctr import cli_support as ccs

        ccs.add_arguments(t)
        t.set_defaults(func=cmd_train)
    except ImportError:
        t.set_defaults(func=lambda a: sys.exit("gsu train: the CTR layer is not available in this build"))

    be = sub.add_parser("bench", help="run a benchmark suite", description="Run a benchmark suite; results as JSON lines + PNG in --out.\n\nSuites:\n"
                        + "\n".join(f"  {k:<9} {v[1]}" for k, v in SUITES.items()), formatter_class=argparse.RawDescriptionHelpFormatter)
    be.add_argument("suite", choices=[*SUITES, "all"])
    be.add_argument("--out", default="results", help="output folder (default results/)")
    be.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    be.add_argument("--threads", type=int, default=1, help="threads pinned for BLAS/numba/torch/faiss (default 1)")
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

    d = sub.add_parser("demo", help="run the main job on the built-in synthetic default", description="Generate data, build indexes, retrieve with every method, train and compare; prints a table and writes a plot.")
    d.add_argument("--out", default="results/demo", help="output folder (default results/demo)")
    d.add_argument("--quick", action="store_true", help="a smaller, faster run")
    d.add_argument("--threads", type=int, default=2, help="threads (default 2)")
    d.set_defaults(func=cmd_demo)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    parser = build_parser()
    a = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if a.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(a.func(a) or 0)
    except (ValueError, TypeError, FileNotFoundError, KeyError) as e:
        if a.verbose:
            raise
        print(f"gsu {a.cmd}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
