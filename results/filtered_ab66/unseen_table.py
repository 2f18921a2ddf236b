import json, sys, re, numpy as np
d = sys.argv[1]; log = open(sys.argv[2]).read()
meta = {"hubs": ("`hubs` (Zipf cluster sizes)", "cosine, 256"), "l2gauss": ("`l2gauss` (300 Gaussian clusters)", "l2, 48"),
        "mips": ("`mips` (log-normal norms)", "ip, 64"), "signs": ("`signs` (near-binary codes)", "ip, 128"),
        "uniform": ("`uniform` (a uniform cube)", "l2, 24"), "scales": ("`scales` (widths over two decades)", "l2, 40")}
tot = 0; n = 0
for s, (nm, md) in meta.items():
    rows = [json.loads(l) for l in open(f"{d}/{s}_summary.jsonl")]
    per = {}
    for r in rows:
        per.setdefault(r["sel"], []).append(r["ok"])
    cells = []
    for sel in (0.001, 0.01, 0.1, 0.5):
        ok = sum(per[sel]); cells.append(f"{ok}/{len(per[sel])}" if ok == len(per[sel]) else f"**{ok}/{len(per[sel])}**")
    tot += sum(r["ok"] for r in rows); n += len(rows)
    b = re.search(rf"{s}_n50000_s3 build .*= ([0-9.]+)x", log)
    print(f"| {nm} | {md} | " + " | ".join(cells) + f" | {np.median([r['ratio'] for r in rows]):.2f} | {min(r['gsu_recall'] for r in rows):.3f} | {b.group(1) if b else '?'}× |")
print(tot, "of", n)
