"""Item-level indexes over embeddings. Every index follows one contract (see :mod:`gsu.index.base`)."""

from gsu.index.base import INDEX_KINDS, Index, SearchResult, info, load, register_index
from gsu.index.filters import CompiledFilter, Filter, IdMap
from gsu.index.flat import FlatIndex
from gsu.index.simhash import SimHashIndex, hamming_topk  # LSH buckets
from gsu.index.hnsw import HNSWIndex  # filtered ANN
from gsu.index.ivf import IVFIndex  # filtered ANN
from gsu.index.filtered import FilteredIndex  # filtered ANN
from gsu.index.seismic import SeismicIndex, SeismicSettings  # blocked sparse inverted index
from gsu.index.sparse_flat import SparseFlatIndex  # exact sparse twin
from gsu.index.sharded import ShardedIndex, build_shards, shard_of

__all__ = [
    "INDEX_KINDS",
    "CompiledFilter",
    "Filter",
    "FilteredIndex",
    "FlatIndex",
    "HNSWIndex",
    "IVFIndex",
    "IdMap",
    "Index",
    "SearchResult",
    "SeismicIndex",
    "SeismicSettings",
    "ShardedIndex",
    "SimHashIndex",
    "SparseFlatIndex",
    "build_shards",
    "hamming_topk",
    "info",
    "load",
    "register_index",
    "shard_of",
]
