import json, sys
import numpy as np
d = sys.argv[1]
tot=0;n=0
log = open(f"{d}/run.log").read()
import re
for s in ("hubs","l2gauss","mips","signs","uniform","scales"):
    try: rows=[json.loads(l) for l in open(f"{d}/{s}/filtered_summary.jsonl")]
    except Exception: continue
    tot+=sum(r["ok"] for r in rows); n+=len(rows)
    b = re.search(rf"{s}_n50000_s3 build .*= ([0-9.]+)x", log)
    print(s, sum(r["ok"] for r in rows), len(rows), round(float(np.median([r['ratio'] for r in rows])),2), round(min(r['gsu_recall'] for r in rows),3), b.group(1) if b else '?', [ (r.get("filter"), r["sel"], round(r["ratio"],2), round(r["gsu_recall"],3)) for r in rows if not r["ok"]])
print(tot, n)
