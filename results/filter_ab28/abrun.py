import subprocess, json, sys, os, numpy as np
cells = sys.argv[1]; rounds = int(sys.argv[2]); old = sys.argv[3] if len(sys.argv) > 3 else "/work/tmp/s28/old"
res = {"old": [], "new": []}
for r in range(rounds):
    for lab, cwd in (("old", old), ("new", "/work/main")):
        env = dict(os.environ, PYTHONPATH=cwd)
        out = subprocess.run(["/work/main/.venv/bin/python", "/work/tmp/s27/ab.py", cells], cwd=cwd, env=env, capture_output=True, text=True).stdout
        res[lab].append(json.loads(out.strip().splitlines()[-1]))
for c in res["old"][0]:
    o = [d[c] for d in res["old"]]; nw = [d[c] for d in res["new"]]
    print(f"{c:36s} old {np.median(o):7.1f} new {np.median(nw):7.1f}  new/old {np.median(nw)/np.median(o):.3f}   old {o} new {nw}")
