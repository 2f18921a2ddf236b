"""gsu.retrieval — per (user, target): pick the top-k behaviors of a long sequence.

See :mod:`gsu.retrieval.methods` for the call every method shares.
"""

from gsu.retrieval.store import BehaviorStore, History  # retrieval layer (issue 6)
from gsu.retrieval.items import ItemTable  # retrieval layer (issue 6)
from gsu.retrieval.result import RetrievalResult, SDIMResult  # retrieval layer (issue 6)
from gsu.retrieval.methods import Exact, HardSearch, Hybrid, Retriever, SoftSearch, TWIN  # retrieval layer (issue 6)
from gsu.retrieval.batch import retrieve_batch  # retrieval layer (issue 6)
from gsu.retrieval.factory import make_method  # retrieval layer (issue 6)
from gsu.retrieval.sparse import SparseSearch  # retrieval layer (issue 6)
from gsu.retrieval.lsh import SDIM, SimHashTopK  # retrieval layer (issue 6)
from gsu.retrieval.bse import BehaviorSequenceEncoder  # SDIM behavior-sequence encoding (issue 4)

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
    "SparseSearch",
    "TWIN",
    "make_method",
    "retrieve_batch",
]
