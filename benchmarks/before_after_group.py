"""group_labels on Br35H (all rows, flips): cold (empty MEDFUSE_HOME) then warm, in fresh processes."""
import json, os, sys, time
which = sys.argv[1]
t0 = time.perf_counter()
from medfuse.config import load_config
from medfuse.data import load_data
from medfuse.data.splits import group_labels
cfg = load_config("br35h")
df, _ = load_data(cfg.data, check_images="none")
t1 = time.perf_counter()
labels, rep = group_labels(df, cfg.data)
t2 = time.perf_counter()
print(json.dumps({"which": which, "rows": len(df), "groups": rep.n_groups, "dup_images": rep.duplicate_images,
                  "group_seconds": round(t2 - t1, 3), "labels_hash": hash(tuple(labels.tolist()))}))
