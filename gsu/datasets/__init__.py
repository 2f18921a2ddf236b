"""gsu.datasets — files and generators -> arrays.

- :mod:`gsu.datasets.io`: dense embedding files (``.npy``, ``.fvecs``/``.ivecs``/``.bvecs``,
  ann-benchmarks ``.hdf5``, Parquet, big-ann ``.fbin``/``.u8bin``/``.i8bin``/``.ibin``) and
  sparse collections (SciPy CSR ``.npz``, Seismic JSON lines, big-ann ``.csr``), with atomic
  writers and :func:`check_sparse` (big-ann layouts: :mod:`gsu.datasets.bigann`).
- :mod:`gsu.datasets.registry`: the data-set SPEC (``gen:clustered?n=...``, ``file:x.hdf5``)
  -> :class:`Dataset` (queries and exact truth), and ``--filters`` SPECs;
  :mod:`gsu.datasets.filters`: per-query filter files and attribute filters.
- :mod:`gsu.datasets.logs`: Taobao UserBehavior and MovieLens behavior logs.
- :mod:`gsu.datasets.text`: offline sentence-transformers embeddings (all-MiniLM-L6-v2).
- :mod:`gsu.datasets.synthetic`: seeded catalogs, sparse collections, behavior sequences.

Bad files raise :class:`gsu.errors.DataFormatError` (a ``ValueError``) naming the file.
"""

from gsu.datasets.filters import attribute_filters, read_filters, write_filters
from gsu.datasets.io import (
    AnnDataset,
    atomic_path,
    check_sparse,
    read_ann_hdf5,
    read_embeddings,
    read_sparse,
    read_sparse_jsonl,
    read_vocabulary,
    sparse_stats,
    write_ann_hdf5,
    write_embeddings,
    write_sparse,
    write_vocabulary,
)
from gsu.datasets.logs import (
    BEHAVIOR_CODES,
    BEHAVIOR_NAMES,
    BehaviorLog,
    read_movielens,
    read_movielens_movies,
    read_taobao,
)
from gsu.datasets.registry import Dataset, load_dataset, load_filters, parse_spec
from gsu.datasets.synthetic import (
    BehaviorData,
    Catalog,
    SparseCollection,
    behavior_dataset,
    catalog_queries,
    clustered_catalog,
    planted_attention_prob,
    sparse_collection,
)
from gsu.datasets.text import (
    EMBEDDING_DIM,
    embed_texts,
    load_text_model,
    movielens_item_texts,
)

__all__ = [
    # io
    "AnnDataset",
    "atomic_path",
    "check_sparse",
    "read_ann_hdf5",
    "read_embeddings",
    "read_sparse",
    "read_sparse_jsonl",
    "read_vocabulary",
    "sparse_stats",
    "write_ann_hdf5",
    "write_embeddings",
    "write_sparse",
    "write_vocabulary",
    # registry and filters
    "Dataset",
    "load_dataset",
    "load_filters",
    "parse_spec",
    "attribute_filters",
    "read_filters",
    "write_filters",
    # logs
    "BEHAVIOR_CODES",
    "BEHAVIOR_NAMES",
    "BehaviorLog",
    "read_movielens",
    "read_movielens_movies",
    "read_taobao",
    # synthetic
    "BehaviorData",
    "Catalog",
    "SparseCollection",
    "behavior_dataset",
    "catalog_queries",
    "clustered_catalog",
    "planted_attention_prob",
    "sparse_collection",
    # text
    "EMBEDDING_DIM",
    "embed_texts",
    "load_text_model",
    "movielens_item_texts",
]
