"""The README's filtered table from a suite summary (JSON lines): python readme_table.py SUMMARY.jsonl"""
import json, re, sys

NAMES = {"clustered": "clustered 200k×64", "powerlaw-d32": "power-law 150k×32", "aniso-d128": "anisotropic 100k×128",
         "neardup-d256": "near-dup 60k×256", "gauss-d768": "wide mixture 30k×768",
         "movielens-minilm": "MovieLens MiniLM 8.6k×384", "pydocs-minilm": "pydocs MiniLM 56.7k×384"}
KINDS = ["random", "correlated", "time-range", "category", "clusters"]
SEL = {0.001: "0.1 %", 0.01: "1 %", 0.1: "10 %", 0.5: "50 %"}


def peer(s: str) -> str:
    m = re.match(r"(\S+) (\{.*\}) (r=\S+)", s)
    name, params, r = m.group(1), eval(m.group(2)), m.group(3)
    if name == "numpy-prefilter":
        return f"numpy pre-filter {r}"
    if name == "faiss-ivf+sel":
        return f"faiss IVF nprobe {params['nprobe']} {r}"
    if name == "faiss-hnsw+sel":
        return f"faiss HNSW ef {params['efSearch']} {r}"
    if name == "faiss-flat+sel":
        return f"faiss flat {r}"
    if name.startswith("hnswlib"):
        return f"hnswlib ef {params.get('ef')} {r}"
    return s


rows = {(r["dataset"], r["filter"], r["sel"]): r for r in map(json.loads, open(sys.argv[1]))}
print("| data | filter | allowed | gsu recall@10 (default) | gsu QPS | gsu QPS, cached filter | fastest peer at recall ≥ 0.95 | peer QPS | ratio (need) |")
print("|---|---|---|---|---|---|---|---|---|")
for d in NAMES:
    for k in KINDS:
        for s in SEL:
            r = rows.get((d, k, s))
            if r is None:
                continue
            print(f"| {NAMES[d]} | {k} | {SEL[s]} | {r['gsu_recall']:.3f} | {round(r['gsu_qps']):,} | {round(r['gsu_cached_qps']):,} | "
                  f"{peer(r['best_peer'])} | {round(r['peer_qps']):,} | {r['ratio']:.2f} ({r['need']:g}) {'✓' if r['ok'] else '✗'} |")
