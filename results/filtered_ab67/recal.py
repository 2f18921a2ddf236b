import sys, numpy as np, logging
from gsu.index import FilteredIndex
idx = FilteredIndex.load(sys.argv[1])
idx.warm_up()
for seed in range(1, 9):
    cal = idx.calibrate(max_seconds=float(sys.argv[2]), seed=seed, progress=False)
    st = cal.settings
    print("seed", seed, "exact %.0f" % st.exact_max_rows, "probe_min", round(st.probe_min_selectivity, 3), "hnsw_min", round(st.hnsw_min_selectivity, 3),
          "even_probe", st.even_probe_min_selectivity, "even_hnsw", st.even_hnsw_min_selectivity, flush=True)
