"""perf with numba's kernels named: python perfmap.py INDEX.gsu QUERIES.npy SECONDS SELECTIVITY

Run it under ``perf record`` with an empty ``NUMBA_CACHE_DIR`` (the kernels compile in this
process, ~3 min, so their object code is at hand; loaded from numba's cache it is not):
after a warm-up it writes /tmp/perf-PID.map from every compiled overload of the kernel
modules (each function's size from ``nm -S`` on the object code, its address from the JIT),
then runs one-query searches under fresh random id arrays (sorted, the given selectivity) for
SECONDS. ``perf report --time 95%-100% --sort symbol`` then shows the kernels by name; the
process's first minutes are the compile. Compare kernels by their share against one that
did not change (e.g. ``ids_bitmap64``), not by absolute share: the compile's leftovers (gc,
llvm) weigh on the whole.

    rm -rf /tmp/nbc && mkdir /tmp/nbc && NUMBA_CACHE_DIR=/tmp/nbc perf record -F 4000 -o perf.data \
        python perfmap.py INDEX.gsu QUERIES.npy 15 0.1
"""
import sys, os, time, subprocess, tempfile, numpy as np
from gsu.index import FilteredIndex
from gsu.index import _request as rq
idx = FilteredIndex.load(sys.argv[1])
Q = np.load(sys.argv[2]).astype(np.float32)
n = idx.ntotal
rng = np.random.default_rng(0)
sel = float(sys.argv[4])
sets = [np.sort(rng.choice(n, int(sel*n), replace=False)).astype(np.int64) for _ in range(100)]
idx.warm_up()
qs = [np.ascontiguousarray(Q[i:i+1]) for i in range(100)]
for i in range(100): idx.search(qs[i], 10, filter=sets[i])
# perf map from every overload of view_request / exact_view_request
lines = []
import numba, importlib
disps = []
for mn in ("gsu.index._filter_kernels", "gsu.index._request", "gsu.index._plan_kernel", "gsu.index._l2", "gsu._simd", "gsu.index._graph_kernels"):
    mod = importlib.import_module(mn)
    for v in vars(mod).values():
        if isinstance(v, numba.core.registry.CPUDispatcher):
            disps.append(v)
seen = set()
for disp in disps:
    for sig, cres in disp.overloads.items():
        lib = cres.library
        try:
            obj = lib.serialize_using_object_code()[2][0]
        except Exception as e:
            print("no obj", e); continue
        with tempfile.NamedTemporaryFile(suffix=".o", delete=True) as f:
            f.write(obj); f.flush(); fn = f.name
            out = subprocess.run(["nm", "-S", "--defined-only", fn], capture_output=True, text=True).stdout
        for l in out.splitlines():
            p = l.split()
            if len(p) == 4 and p[2] in "tT":
                name = p[3]
                try:
                    addr = lib.get_pointer_to_function(name)
                except Exception:
                    addr = 0
                if addr and name not in seen:
                    seen.add(name)
                    lines.append("%x %x %s" % (addr, int(p[1], 16), name))
with open("/tmp/perf-%d.map" % os.getpid(), "w") as f:
    f.write("\n".join(lines) + "\n")
print("mapped", len(lines), flush=True)
t0 = time.time()
while time.time() - t0 < float(sys.argv[3]):
    for i in range(100):
        idx.search(qs[i], 10, filter=sets[i])
