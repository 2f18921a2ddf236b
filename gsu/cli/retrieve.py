"""``gsu retrieve``: arguments and entry point; the work is :func:`gsu.retrieval.requests.retrieve_file`."""

from __future__ import annotations

import argparse
import json

__all__ = ["add_arguments", "main"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments of ``gsu retrieve``."""
    p.add_argument("store", help="behavior store file (BehaviorStore.save)")
    p.add_argument("items", help="item table file (ItemTable.save)")
    p.add_argument("requests", help="requests: CSV with header user,target[,time] or .npz with arrays user,target[,time]")
    p.add_argument("out", help="output .npz: positions, scores, mask, items, timestamps (sdim: vectors, mask)")
    p.add_argument("--method", default="exact", help="a registered method: exact, hard, soft, simhash, sdim, sparse, twin, "
                   "clustered, cascade, multi_interest (gsu.retrieval.register_method adds more), or hybrid:hard+soft "
                   "(default exact)")
    p.add_argument("-k", type=int, default=100, help="behaviors per request (default 100)")
    p.add_argument("--param", action="append", metavar="KEY=VALUE", help="method setting, repeatable (e.g. metric=cosine, n_bits=64, soft.metric=cosine)")
    p.add_argument("--index", default=None, help="saved catalog index (ids = item ids) for soft/sparse long histories")
    p.add_argument("--threads", type=int, default=1, help="threads over users (default 1)")
    p.add_argument("--no-mmap", action="store_true", help="read files into memory instead of memory-mapping them")


def main(a: argparse.Namespace) -> int:
    """Entry point used by ``gsu retrieve``; prints the summary as JSON."""
    from gsu.cli import _params
    from gsu.retrieval.requests import retrieve_file

    summary = retrieve_file(
        a.store,
        a.items,
        a.method,
        a.requests,
        a.out,
        k=a.k,
        params=_params(a.param),
        index_path=a.index,
        n_threads=a.threads,
        mmap=not a.no_mmap,
    )
    print(json.dumps(summary))
    return 0
