import sys, numpy as np
from pathlib import Path
from gsu.bench.filtered_data import load_dataset
from gsu.bench.filtered import make_filters
import gsu.index, gsu.index.planner as P, os
P.SPLIT_BY_USERS = os.environ.get("SPLIT", "1") == "1"
name, kind, sel = sys.argv[1], sys.argv[2], float(sys.argv[3])
ds = load_dataset(name, Path("/work/tmp/cache"), quick=False, nq=100, seed=0)
idx = gsu.index.load(os.environ["IDX"], mmap=True)
X, Q = ds.x, ds.q
for seed in [int(s) for s in sys.argv[4:]]:
    fl = make_filters(ds, kind, sel, np.random.default_rng(seed))
    rs, routes = [], []
    for i in range(100):
        s = X[fl[i]] @ Q[i]; t = set(fl[i][np.argsort(-s)[:10]].tolist())
        r = idx.search(Q[i], 10, filter=fl[i]); rs.append(len(t & set(r.ids[0].tolist())) / 10)
    rs = np.array(rs)
    print(name, kind, sel, "seed", seed, "recall %.3f" % rs.mean(), "queries < 0.7:", int((rs < 0.7).sum()), "min %.1f" % rs.min())
