"""How often a calibration sample of m of the 300 held-out rows (spread_2m_af571da.json) lets a beam pass
calibration's test (mean >= 0.97 and lower bound mean - 1.645 sd / sqrt(m) >= 0.95), 4000 draws."""
import json, math
import numpy as np
d = json.load(open(__file__.replace("passrate.py", "spread_2m_af571da.json")))
rng = np.random.default_rng(0)
for key in ("2.2", "2.8", "4.0"):
    r = np.array(d[f"held-out rows|{key}"])
    for m in (24, 48, 96):
        ok = 0
        for _ in range(4000):
            s = r[rng.choice(r.shape[0], m, replace=False)]
            ok += s.mean() >= 0.97 and s.mean() - 1.645 * s.std(ddof=1) / math.sqrt(m) >= 0.95
        print(f"hnsw_ef {key}: true mean {r.mean():.3f}; passes on {m} queries in {ok / 4000:.1%} of draws")
