import numpy as np, scipy.sparse as sp, os, signal
from gsu.index import load
C = "/work/tmp/s24/sp100/cache"; name = "movielens-bm25"
z = np.load(f"{C}/data_{name}.npz")
Q = sp.csr_matrix((z["qd"], z["qi"], z["qp"]), shape=tuple(z["qs"]))
g = load(f"{C}/gsu_{name}.gsu")
st = {}
for i in range(5): g.search(Q[i], 10, query_cut=3, heap_factor=0.6)
g.search(Q[3:4], 10, query_cut=3, heap_factor=0.6, stats=st); print("scored", st["scored"])
r = Q[3]
os.kill(os.getpid(), signal.SIGTRAP)
g.search(r, 10, query_cut=3, heap_factor=0.6)
os.kill(os.getpid(), signal.SIGTRAP)
