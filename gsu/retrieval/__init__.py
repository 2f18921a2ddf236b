"""gsu.retrieval — per (user, target): pick the top-k behaviors of a long sequence.

See :mod:`gsu.retrieval.methods` for the call every method shares.
"""

from gsu.retrieval.store import BehaviorStore, History
from gsu.retrieval.items import ItemTable
from gsu.retrieval.result import RetrievalResult, SDIMResult
from gsu.retrieval.methods import TWIN, Exact, HardSearch, Hybrid, ItemSearch, Retriever, SoftSearch
from gsu.retrieval.batch import retrieve_batch
from gsu.retrieval.registry import make_method, method_names, register_method
from gsu.retrieval.sparse import SparseSearch
from gsu.retrieval.lsh import SDIM, SimHashTopK
from gsu.retrieval.bse import BehaviorSequenceEncoder  # SDIM behavior-sequence encoding

__all__ = [
    "BehaviorSequenceEncoder",
    "BehaviorStore",
    "Exact",
    "HardSearch",
    "History",
    "Hybrid",
    "ItemTable",
    "RetrievalResult",
    "SDIM",
    "SimHashTopK",
    "Retriever",
    "SDIMResult",
    "SoftSearch",
    "ItemSearch",
    "SparseSearch",
    "TWIN",
    "make_method",
    "method_names",
    "register_method",
    "retrieve_batch",
]
