import json, sys, numpy as np
out, R = sys.argv[1], int(sys.argv[2])
import os
sides = tuple(os.environ.get("SIDES", "base away main").split())
d = {s: [json.load(open(f"{out}/{s}_{r}.json")) for r in range(1, R + 1)] for s in sides}
for s in sides:
    for r, j in enumerate(d[s], 1):
        st = j["settings"]
        print(s, r, "ex %5.0f walk %.3f probe %.3f np %d |" % (st["exact_max_rows"], st["hnsw_min_selectivity"], st["probe_min_selectivity"], len(st["points"])),
              ' '.join(f'{c.split(":")[0][:4]}{c.split(":")[1]}={v[0]:.0f}{"".join(k[0] for k in v[3])}' for c, v in j['cells'].items()))
for c in d[sides[0]][0]["cells"]:
    med = {s: np.median([x["cells"][c][0] for x in d[s]]) for s in sides}
    print(f"{c:16s} " + " ".join(f"{s} {med[s]:7.1f}" for s in sides) + f"  minrec " + "/".join(f"{min(x['cells'][c][2] for x in d[s]):.3f}" for s in sides))
