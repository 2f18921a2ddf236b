"""Write generated data sets unlike the suite's (results/filtered_ab60/unseen.py's generators) as .npy files for
`python -m gsu.bench.filtered --data FILE?queries=...&metric=...`: python unseen_files.py OUTDIR N SEED NAME,...
(100 queries each, held out of the base by the generator); prints each set's --data SPEC."""
import sys
from pathlib import Path

import numpy as np

src = (Path(__file__).parents[1] / "filtered_ab60" / "unseen.py").read_text()
gen: dict = {}
exec(compile(src[: src.index("\nnames = ")], "unseen.py", "exec"), gen)  # its generators, not its run
out, n, seed = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
out.mkdir(parents=True, exist_ok=True)
for name in sys.argv[4].split(","):
    x, q, lab, metric = gen["make"](name, n, seed)
    base, queries = out / f"{name}_n{n}_s{seed}.npy", out / f"{name}_n{n}_s{seed}_q.npy"
    np.save(base, x)
    np.save(queries, np.ascontiguousarray(q[:100]))
    print(f"{base}?queries={queries}&metric={metric}")
