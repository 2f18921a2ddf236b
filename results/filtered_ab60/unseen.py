"""Default recall of FilteredIndex on data sets unlike the suite's, fresh filters (stop 20's script; stop 60 adds
hubs, scales, signs and curve)."""
import sys, time, json
from pathlib import Path
import numpy as np
from threadpoolctl import threadpool_limits
import gsu.index
from gsu.index import FilteredIndex

def make(name, n, seed=0):
    rng = np.random.default_rng(seed)
    nq = 200
    N = n + nq
    if name == "mips":  # unnormalised inner product, lognormal norms
        d, c = 64, 100
        C = rng.standard_normal((c, d)).astype(np.float32)
        lab = rng.integers(0, c, N)
        x = C[lab] + 0.7 * rng.standard_normal((N, d)).astype(np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        x *= rng.lognormal(0, 0.5, (N, 1)).astype(np.float32)
        metric = "ip"
    elif name == "l2gauss":
        d, c = 48, 300
        C = 3 * rng.standard_normal((c, d)).astype(np.float32)
        lab = rng.integers(0, c, N)
        x = C[lab] + rng.standard_normal((N, d)).astype(np.float32)
        metric = "l2"
    elif name == "lowrank":  # intrinsic dimension 6 in 96-d, cosine
        d, c = 96, 50
        B = rng.standard_normal((6, d)).astype(np.float32)
        Z = rng.standard_normal((c, 6)).astype(np.float32) * 2
        lab = rng.integers(0, c, N)
        z = Z[lab] + rng.standard_normal((N, 6)).astype(np.float32)
        x = z @ B + 0.05 * rng.standard_normal((N, d)).astype(np.float32)
        metric = "cosine"
    elif name == "dups":  # 30 % exact copies, cosine, 32-d
        d, c = 32, 80
        C = rng.standard_normal((c, d)).astype(np.float32)
        lab = rng.integers(0, c, N)
        x = C[lab] + 0.5 * rng.standard_normal((N, d)).astype(np.float32)
        src = rng.integers(0, N, int(0.3 * N))
        dst = rng.choice(N, src.shape[0], replace=False)
        x[dst] = x[src]; lab[dst] = lab[src]
        metric = "cosine"
    elif name == "uniform":  # no cluster structure, uniform cube, l2, 24-d
        d = 24
        x = rng.random((N, d)).astype(np.float32)
        lab = (x[:, 0] * 40).astype(np.int64)
        metric = "l2"
    elif name == "hubs":  # cosine, 256-d, cluster sizes Zipf 1.5 (a few huge, many tiny), tight small clusters
        d, c = 256, 400
        C = rng.standard_normal((c, d)).astype(np.float32)
        w = 1.0 / np.arange(1, c + 1) ** 1.5
        lab = rng.choice(c, N, p=w / w.sum())
        width = np.where(np.arange(c) < 10, 1.2, 0.3)[lab][:, None].astype(np.float32)
        x = C[lab] + width * rng.standard_normal((N, d)).astype(np.float32)
        metric = "cosine"
    elif name == "scales":  # l2, 40-d, cluster scales log-uniform over two decades
        d, c = 40, 150
        C = 4 * rng.standard_normal((c, d)).astype(np.float32)
        sc = np.exp(rng.uniform(np.log(0.1), np.log(10.0), c)).astype(np.float32)
        lab = rng.integers(0, c, N)
        x = C[lab] + sc[lab][:, None] * rng.standard_normal((N, d)).astype(np.float32)
        metric = "l2"
    elif name == "signs":  # ip on near-binary codes (+-1 plus noise), 128-d, no normalisation
        d, c = 128, 64
        C = np.sign(rng.standard_normal((c, d))).astype(np.float32)
        lab = rng.integers(0, c, N)
        flip = rng.random((N, d)) < 0.25
        x = np.where(flip, -C[lab], C[lab]) + 0.1 * rng.standard_normal((N, d)).astype(np.float32)
        x = x.astype(np.float32)
        metric = "ip"
    elif name == "curve":  # a 2-d manifold (a rolled sheet) embedded in 64-d, ip, unnormalised
        d = 64
        u = rng.uniform(0, 4 * np.pi, N); v = rng.uniform(-1, 1, N)
        base = np.stack([u * np.cos(u), u * np.sin(u), 3 * v], 1).astype(np.float32)
        R = np.linalg.qr(rng.standard_normal((d, d)))[0][:3].astype(np.float32)
        x = base @ R + 0.05 * rng.standard_normal((N, d)).astype(np.float32)
        lab = (u / (4 * np.pi) * 30).astype(np.int64)
        metric = "ip"
    perm = rng.permutation(N)
    x, lab = x[perm], lab[perm]
    return np.ascontiguousarray(x[:n]), np.ascontiguousarray(x[n:]), lab[:n], metric

def scores(x, q, metric):
    if metric == "ip":
        return x @ q
    if metric == "cosine":
        return (x @ q) / (np.linalg.norm(x, axis=1) * np.linalg.norm(q) + 1e-30)
    return -((x - q) ** 2).sum(1)

def filters(kind, sel, x, q, lab, metric, rng):
    n = x.shape[0]; m = max(1, int(round(sel * n)))
    if kind == "random":
        return np.sort(rng.choice(n, m, replace=False))
    if kind == "correlated":
        s = scores(x, q, metric)
        near = np.argpartition(-s, min(2 * m, n - 1))[: 2 * m]
        a = rng.choice(near, int(0.8 * m), replace=False)
        rest = np.setdiff1d(np.arange(n), a)
        return np.sort(np.concatenate([a, rng.choice(rest, m - a.shape[0], replace=False)]))
    if kind == "range":
        st = int(rng.integers(0, n - m + 1)); return np.arange(st, st + m)
    if kind == "clusters":
        order = rng.permutation(lab.max() + 1); out = []; tot = 0
        for c in order:
            r = np.flatnonzero(lab == c); out.append(r); tot += r.shape[0]
            if tot >= m: break
        return np.sort(np.concatenate(out))

def recall(x, q, metric, allowed, got, k):
    s = scores(x, q, metric)
    if allowed is not None:
        sa = s[allowed]
    else:
        sa = s
    kk = min(k, sa.shape[0])
    kth = np.partition(-sa, kk - 1)[kk - 1] * -1
    got = got[got >= 0]
    good = (s[got] >= kth - 1e-4 * max(1.0, abs(kth))).sum()
    return good / kk

names = sys.argv[1].split(",")
n = int(sys.argv[2]) if len(sys.argv) > 2 else 50000
seed = int(sys.argv[3]) if len(sys.argv) > 3 else 0  # the generators' seed (0: the logged runs)
res = {}
for name in names:
    x, Q, lab, metric = make(name, n, seed)
    t = time.perf_counter()
    idx = FilteredIndex(x.shape[1], metric)
    idx.add(x)
    bt = time.perf_counter() - t
    print(f"{name}: n={n} d={x.shape[1]} {metric} build {bt:.1f}s", flush=True)
    rng = np.random.default_rng(5)
    with threadpool_limits(1):
        for kind in ("none", "random", "correlated", "range", "clusters"):
            for sel in ((1.0,) if kind == "none" else (0.001, 0.01, 0.1, 0.5)):
                rs, ts = [], []
                for i in range(Q.shape[0]):
                    al = None if kind == "none" else filters(kind, sel, x, Q[i], lab, metric, rng)
                    t0 = time.perf_counter()
                    r = idx.search(Q[i], 10, filter=al)
                    ts.append(time.perf_counter() - t0)
                    rs.append(recall(x, Q[i], metric, al, r.ids[0], 10))
                rs = np.array(rs)
                flag = " <<<" if rs.mean() < 0.95 else ""
                print(f"  {kind:10s} {sel:6}: recall {rs.mean():.3f} (min {rs.min():.1f}) {np.median(ts)*1e6:.0f} us{flag}", flush=True)
                res[f"{name}/{kind}/{sel}"] = float(rs.mean())
tag = "" if (n, seed) == (50000, 0) else f"_n{n}_s{seed}"
json.dump(res, open(Path(__file__).with_name(f"unseen_{'_'.join(names)}{tag}.json"), "w"), indent=1)
