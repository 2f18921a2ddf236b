import json, sys
NAMES = {"clustered": "clustered 200k×64", "powerlaw-d32": "power-law 150k×32", "aniso-d128": "anisotropic 100k×128",
         "neardup-d256": "near-duplicates 60k×256", "gauss-d768": "wide mixture 30k×768", "movielens-minilm": "MovieLens MiniLM 8.6k×384",
         "pydocs-minilm": "pydocs MiniLM 56.7k×384"}
def peer(s):
    s = s.replace("faiss-ivf+sel", "faiss IVF").replace("faiss-hnsw+sel", "faiss HNSW").replace("numpy-prefilter", "numpy pre-filter").replace("faiss-flat+sel", "faiss flat")
    import re
    s = re.sub(r"\{'nlist': \d+, 'nprobe': (\d+)\}", r"nprobe \1", s)
    s = re.sub(r"\{'efSearch': (\d+)\}", r"ef \1", s)
    s = re.sub(r"\{'ef': (\d+)\}", r"ef \1", s)
    s = s.replace(" {}", "")
    return s
sel = lambda x: f"{x*100:g} %"
DS = list(NAMES)
KINDS = ["random", "correlated", "time-range", "category", "clusters"]
rows = [json.loads(l) for l in open(sys.argv[1])]
rows.sort(key=lambda r: (DS.index(r["dataset"]) if r["dataset"] in DS else 99, KINDS.index(r["filter"]) if r["filter"] in KINDS else 99, r["sel"]))
for r in rows:
    print(f"| {NAMES.get(r['dataset'], r['dataset'])} | {r['filter']} | {sel(r['sel'])} | {r['gsu_recall']:.3f} | {r['gsu_qps']:,.0f} | {r['gsu_cached_qps']:,.0f} | {peer(r['best_peer'])} | {r['peer_qps']:,.0f} | {r['ratio']:.2f} ({r['need']:g}) {'✓' if r['ok'] else '✗'} |")
