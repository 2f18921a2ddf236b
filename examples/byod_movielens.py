"""Write a "bring your own data" benchmark set from MovieLens: the files a user would bring.

From ``../shared/datasets/movielens-latest-small`` (or ``--movielens DIR``) this writes into
``OUT`` (default ``/tmp/byod``):

- ``movielens-minilm-angular.hdf5`` — ann-benchmarks layout: ``train`` (movies' MiniLM
  embeddings of "Title (year) — genres", 384-d), ``test`` (``--nq`` held-out movies),
  ``neighbors`` / ``distances`` (exact top-100 by cosine distance), ``distance="angular"``;
- ``user_filters.jsonl`` — one line per test query: the ``train`` rows of the movies one
  user rated (a real behavior set: "search only what this user has seen"), users drawn
  at random;
- ``movielens-bm25-docs.npz`` / ``movielens-bm25-queries.npz`` — BM25 vectors of the movies'
  titles, genres and tags (CSR + ids), queries are held-out movies' titles plus one genre.

Then::

    gsu bench filtered --data OUT/movielens-minilm-angular.hdf5 --filters OUT/user_filters.jsonl --out results/byod
    gsu bench sparse --data "OUT/movielens-bm25-docs.npz?queries=OUT/movielens-bm25-queries.npz" --out results/byod
"""

from __future__ import annotations

import argparse
import csv
import os
from pathlib import Path

import numpy as np


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--movielens", default=str(Path(__file__).resolve().parents[1] / ".." / "shared" / "datasets" / "movielens-latest-small"))
    ap.add_argument("--out", default="/tmp/byod")
    ap.add_argument("--nq", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from gsu.datasets import read_movielens_movies, write_ann_hdf5, write_sparse
    from gsu.datasets.filters import write_filters
    from gsu.datasets.text import embed_texts, movielens_item_texts

    folder = Path(a.movielens)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    movies = read_movielens_movies(folder / "movies.csv")
    cache = out / f"minilm_{len(movies['movie_id'])}.npy"
    if cache.exists():
        emb = np.load(cache)
    else:
        emb = embed_texts(movielens_item_texts(movies), batch_size=128, progress=False)
        np.save(cache, emb)
    rng = np.random.default_rng(a.seed)
    perm = rng.permutation(emb.shape[0])
    qi, xi = np.sort(perm[: a.nq]), np.sort(perm[a.nq:])
    train, test = emb[xi].astype(np.float32), emb[qi].astype(np.float32)
    tn = train / np.linalg.norm(train, axis=1, keepdims=True)
    qn = test / np.linalg.norm(test, axis=1, keepdims=True)
    sims = qn.astype(np.float64) @ tn.T.astype(np.float64)
    nb = np.argsort(-sims, axis=1, kind="stable")[:, :100]
    write_ann_hdf5(out / "movielens-minilm-angular.hdf5", train=train, test=test, neighbors=nb,
                   distances=1.0 - np.take_along_axis(sims, nb, 1), distance="angular")
    # one real behavior set per query: the train rows of the movies one user rated
    row_of = {int(m): r for r, m in enumerate(np.asarray(movies["movie_id"])[xi])}
    rated: dict[int, list[int]] = {}
    with open(folder / "ratings.csv", newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            r = row_of.get(int(row["movieId"]))
            if r is not None:
                rated.setdefault(int(row["userId"]), []).append(r)
    users = sorted(rated)
    pick = rng.choice(len(users), a.nq, replace=len(users) < a.nq)
    write_filters(out / "user_filters.jsonl", [np.asarray(rated[users[u]], np.int64) for u in pick])
    # sparse: the sparse suite's MovieLens BM25 collection, written as files
    from gsu.bench.sparse import _movielens

    d = _movielens(a.nq, a.seed)
    write_sparse(out / "movielens-bm25-docs.npz", d["docs"])
    write_sparse(out / "movielens-bm25-queries.npz", d["queries"])
    sizes = [len(rated[users[u]]) for u in pick]
    print(f"wrote {out}: train {train.shape}, test {test.shape}, filters {a.nq} users "
          f"(median {int(np.median(sizes))} movies, {np.median(sizes) / train.shape[0]:.2%}), "
          f"bm25 docs {d['docs'].shape} nnz {d['docs'].nnz}, queries {d['queries'].shape}")


if __name__ == "__main__":
    main()
