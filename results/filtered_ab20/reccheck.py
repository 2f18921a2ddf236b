import sys, numpy as np
from pathlib import Path
from gsu.bench.filtered_data import load_dataset
from gsu.bench.filtered import make_filters
import gsu.index
name, kind, sel = sys.argv[1], sys.argv[2], float(sys.argv[3])
ds = load_dataset(name, Path("/work/tmp/cache"), quick=False, nq=100, seed=0)
X, Q = ds.x, ds.q
idxs = {c: gsu.index.load(str([f for f in Path(f"/work/tmp/{c}").glob(f"{name}_*.gsu")][0]), mmap=False) for c in ("s20/fcache3", "s21/fcache5")}
for seed in (7, 8, 9, 10):
    fl = make_filters(ds, kind, sel, np.random.default_rng(seed))
    truth = [set(fl[i][np.argsort(-(X[fl[i]] @ Q[i]))[:10]].tolist()) for i in range(100)]
    line = []
    for c, idx in idxs.items():
        got = [idx.search(Q[i], 10, filter=fl[i]).ids[0] for i in range(100)]
        r = np.mean([len(truth[i] & set(g.tolist())) / 10 for i, g in zip(range(100), got)])
        kth = [np.sort(X[fl[i]] @ Q[i])[-10] for i in range(100)]
        rt = np.mean([((X[g[g >= 0]] @ Q[i]) >= kth[i] - 1e-3).sum() / 10 for i, g in zip(range(100), got)])
        r = (r, rt)
        e = idx.explain(Q[:5], 10, filter=fl[0])
        line.append(f"{c.split('/')[1]} {r[0]:.3f} tie {r[1]:.3f} (route {e.routes[0]} ef {e.ef[0]} cand {e.candidates[0]})")
    print(name, kind, sel, seed, " | ".join(line), flush=True)
