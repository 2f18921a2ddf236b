"""2*10^6 (0fc0529's build): random 50 % filters, default plan, recall@10 and median latency of the
step's kind of query (rows + noise 0.05/dim) and of held-out rows, at effort 1.0 / 1.3 / 1.6; and the
data's own scale: distance from a row to its nearest other row vs the noise's norm."""
import time
import numpy as np
from threadpoolctl import threadpool_limits
import gsu.index
from gsu.index import Filter
x = np.load("/work/tmp/s22/bcache/build_clustered_2000000x96_s0.npy", mmap_mode="r")
idx = gsu.index.load("/work/tmp/s22/bcache/build_files/gsu_clustered_2000000x96_M32_efc200.gsu", mmap=True)
n, nq = x.shape[0], 60
rng = np.random.default_rng(11)
qrows = rng.choice(n, nq, replace=False)
rows_q = np.asarray(x[qrows], dtype=np.float32)
noise = 0.05 * rng.standard_normal(rows_q.shape).astype(np.float32)
noisy_q = rows_q + noise
X = np.asarray(x, dtype=np.float32)
with threadpool_limits(2):
    sq = np.einsum("ij,ij->i", rows_q, rows_q)
    d2 = sq[:, None] - 2 * rows_q @ X.T + np.einsum("ij,ij->i", X, X)[None, :]
    d2[np.arange(nq), qrows] = np.inf
    nn = np.sqrt(np.maximum(d2.min(1), 0))
    del d2
print("row norm median %.3f, nearest-other-row distance median %.3f (p10 %.3f, p90 %.3f), noise norm median %.3f"
      % (np.median(np.linalg.norm(rows_q, axis=1)), np.median(nn), np.percentile(nn, 10), np.percentile(nn, 90),
         np.median(np.linalg.norm(noise, axis=1))), flush=True)
m = n // 2
sets = [np.sort(rng.choice(n, m, replace=False)) for _ in range(nq)]
truth = {}
for name, Q, drop in (("rows", rows_q, True), ("noisy", noisy_q, False)):
    for i in range(nq):
        al = sets[i][sets[i] != qrows[i]] if drop else sets[i]
        sc = X[al] @ Q[i]
        truth[name, i] = (al, np.partition(sc, -10)[-10])
with threadpool_limits(1):
    for eff in (1.0, 1.3, 1.6):
        for name, Q, drop in (("rows", rows_q, True), ("noisy", noisy_q, False)):
            hits, ts = 0, []
            for i in range(nq):
                al, kth = truth[name, i]
                t = time.perf_counter()
                got = idx.search(Q[i], 10, filter=al, effort=eff).ids[0]
                ts.append(time.perf_counter() - t)
                got = got[got >= 0]
                hits += int((X[np.sort(got)] @ Q[i] >= kth - 1e-6).sum())
            print("effort %.1f %-5s recall %.3f median %.2f ms" % (eff, name, hits / (10 * nq), 1e3 * np.median(ts)), flush=True)
print(idx.explain(noisy_q[:1], 10, filter=sets[0]))
