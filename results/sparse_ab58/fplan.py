# filtered SeismicIndex search at many selectivities: the calibrated filter plan (default call) vs the fixed rule
# max(4096, n // 50) (filter_exact_max passed explicitly: the former default), one thread, a fresh filter per call
import time, sys, json, numpy as np, scipy.sparse as sp
from gsu.bench import harness
harness.pin_threads(1)
from gsu.index import load, Filter
from gsu.index.seismic import default_filter_exact_max
C = sys.argv[1]
names = sys.argv[2].split(",")
sels = [float(x) for x in sys.argv[3].split(",")]
for name in names:
    z = np.load(f"{C}/data_{name}.npz")
    Q = sp.csr_matrix((z["qd"], z["qi"], z["qp"]), shape=tuple(z["qs"]))
    rows = [Q[i] for i in range(min(100, Q.shape[0]))]
    g = load(f"{C}/gsu_{name}.gsu", mmap=False)
    n = g.ntotal
    rule = default_filter_exact_max(n)
    rng = np.random.default_rng(11)
    for sel in sels:
        m = max(10, int(sel * n))
        fs = [np.sort(rng.choice(n, m, replace=False)).astype(np.int64) for _ in rows]
        ex = [g.search(r, 10, filter=f, filter_exact_max=n) for r, f in zip(rows, fs)]
        out = {"data": name, "sel": sel, "m": m}
        for mode, kw in (("plan", {}), ("rule", {"filter_exact_max": rule})):
            res = [g.search(r, 10, filter=f, **kw) for r, f in zip(rows, fs)]
            rec = []
            for a, b in zip(ex, res):
                t = a.scores[0][np.isfinite(a.scores[0])]
                if t.size == 0:
                    rec.append(1.0); continue
                kth = t[-1]
                rec.append(min(t.size, int((b.scores[0] >= kth - 1e-5 * max(1, abs(kth))).sum())) / t.size)
            ts = []
            for rep in range(5):
                t0 = time.perf_counter()
                for r, f in zip(rows, fs): g.search(r, 10, filter=Filter.from_ids(f), **kw)
                ts.append((time.perf_counter() - t0) / len(rows) * 1e6)
            out[mode + "_us"] = round(float(np.median(ts)), 1)
            out[mode + "_recall"] = round(float(np.mean(rec)), 4)
        print(json.dumps(out), flush=True)
