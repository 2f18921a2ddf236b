import numpy as np
from gsu.index import load
from gsu.index import _calibrate as cb
from gsu.bench.filtered_data import from_registry
D = "/work/tmp/ud"
ds = from_registry(f"{D}/l2gauss_n50000_s3.npy?queries={D}/l2gauss_n50000_s3_q.npy&metric=l2", nq=100, seed=0)
idx = load("/work/tmp/s66/cache_us2/l2gauss_n50000_s3.gsu")
n = idx.ntotal; k = 10; base = idx._base_settings
rng = np.random.default_rng(7)
qrows = rng.choice(n, 48, replace=False)
Qcal = idx._scoring_queries(np.ascontiguousarray(idx.hnsw.vectors[qrows]))
Qb = idx._scoring_queries(np.ascontiguousarray(ds.q[:48]))
ivf = idx._budget_kw("ivf", 0.25, None, k, base)
prb = idx._budget_kw("probe", 1.7, 0.25, k, base)
hn = idx._budget_kw("hnsw", 1.7, None, k, base)
part = cb._Regions(idx).partition(rng)
for label, Q, qr in (("cal-queries", Qcal, qrows), ("bench-queries", Qb, None)):
    timer = cb._Timer(idx, Q, k)
    ctx = cb.held_out(idx, qr)
    with ctx:
        cb._warm_up(idx, Q, k, rng)
        m = n // 2
        for kd in ("random", "correlated", "region"):
            sets = cb._Sets(cb.draw_filters(idx, kd, m, Q, qr, rng, None, part), n, None)
            truth = cb._truth(idx, Q, sets, k, None)
            out = []
            for name, code, kw in (("ivf", cb._IVF, ivf), ("probe", cb._IVF, prb), ("hnsw", cb._HNSW, hn)):
                rs = [timer.run(sets, truth, code, **kw)[:2] for _ in range(3)]
                out.append(f"{name} {np.median([c for _, c in rs]):6.1f}µs r{rs[0][0]:.3f}")
            print(label, kd, " | ".join(out))
