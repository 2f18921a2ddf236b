"""The near-copy check's transient memory at 2·10^6 × 96 (this stop's build cache): argv[1] "old", the
expression form before 1d3c2e0's successor, "new", neighbour_distances as it is; each in its own process."""
import numpy as np, resource, sys
from gsu.index import _calibrate as cm
X=np.load("/work/tmp/s22/bcache/build_clustered_2000000x96_s0.npy")
rows=np.random.default_rng(0).choice(X.shape[0],48,replace=False)
sq=cm._row_sq_norms(X)
base=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss/1024
import time; t=time.perf_counter()
if sys.argv[1]=="old":
    Xf=X; kk=10
    for a in range(0,48,16):
        r=rows[a:a+16]
        d2 = sq[r][:, None] + sq[None, :] - 2.0 * (Xf[r] @ Xf.T)
        d2[np.arange(r.shape[0]), r] = np.inf
        near = np.partition(d2, kk - 1, axis=1)[:, :kk]
else:
    cm.neighbour_distances(X,rows,10,sq)
print(sys.argv[1], "peak added %.0f MB" % (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss/1024-base), "%.2f s" % (time.perf_counter()-t))
