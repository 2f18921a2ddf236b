"""2·10^6 × 96 clustered (this stop's fresh build at 1d3c2e0): default recall@10 for random
filters at 10 / 30 / 50 % with two kinds of queries, 100 each, fresh filters: held-out index rows
(their own row left out of the filter, as calibration draws them) and the build step's rows plus
noise (0.05 per dimension, norm ~0.49)."""
import numpy as np
from threadpoolctl import threadpool_limits
import gsu.index
from gsu.index import Filter
x = np.load("/work/tmp/s22/bcache/build_clustered_2000000x96_s0.npy", mmap_mode="r")
idx = gsu.index.load("/work/tmp/s22/bcache/build_files/gsu_clustered_2000000x96_M32_efc200.gsu", mmap=True)
n, nq = x.shape[0], 100
rng = np.random.default_rng(3)
qrows = rng.choice(n, nq, replace=False)
rows_q = np.asarray(x[qrows], dtype=np.float32)
noisy_q = rows_q + 0.05 * rng.standard_normal(rows_q.shape).astype(np.float32)
with threadpool_limits(1):
    for s in (0.1, 0.3, 0.5):
        m = int(s * n)
        sets = [np.sort(rng.choice(n, m, replace=False)) for _ in range(nq)]
        line = []
        for name, Q, drop in (("rows", rows_q, True), ("rows+noise", noisy_q, False)):
            hits = 0
            for i in range(nq):
                al = sets[i][sets[i] != qrows[i]] if drop else sets[i]
                got = idx.search(Q[i], 10, filter=Filter(al)).ids[0]
                sc = np.asarray(x[al], dtype=np.float64) @ Q[i].astype(np.float64)
                kth = np.partition(sc, -10)[-10]
                got = got[got >= 0]
                hits += int((np.asarray(x[np.sort(got)], dtype=np.float64) @ Q[i].astype(np.float64) >= kth - 1e-6).sum())
            line.append(f"{name} {hits / (10 * nq):.3f}")
        print(f"random {s}: " + ", ".join(line), flush=True)
