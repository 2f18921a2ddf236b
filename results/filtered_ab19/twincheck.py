import numpy as np, gsu.index, gsu.index._calibrate as C
from pathlib import Path
for f in sorted(Path("/work/tmp/s20/fcache").glob("*.gsu")):
    idx = gsu.index.load(str(f), mmap=True)
    n = idx.ntotal; rng = np.random.default_rng(idx.seed); ep = idx.hnsw.entry_point
    pick = rng.choice(n - 1, min(48, n - 1), replace=False); pick = (pick + (pick >= ep)).astype(np.int64)
    out = C.twin_free_rows(idx.hnsw.vectors, pick, 10, ep, [idx.seed, 1])
    d1, dk = C.neighbour_distances(idx.hnsw.vectors, pick, 10)
    print(f.name.split("_")[0], "replaced", int((out != pick).sum()), "of", len(pick), "min d1/median dk %.3f" % (d1.min() / np.median(dk)))
