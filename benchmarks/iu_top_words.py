"""IU X-ray: which words most raise the "abnormal" score across the test set?

Explains (layer integrated gradients on the word-CNN's embeddings) the test rows that a
trained IU model calls abnormal and ranks words by their mean attribution (words seen at
least ``--min-count`` times)::

    .venv/bin/medfuse train iu_xray --out runs/iu
    .venv/bin/python benchmarks/iu_top_words.py --run runs/iu --rows 250
"""

from __future__ import annotations

import argparse
import collections
import json
from pathlib import Path

from medfuse.config import RunConfig
from medfuse.data import holdout_split, load_data
from medfuse.runs import load_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, required=True, help="run directory of medfuse train")
    ap.add_argument("--rows", type=int, default=250, help="abnormal-predicted rows to explain")
    ap.add_argument("--min-count", type=int, default=5)
    ap.add_argument("--top", type=int, default=20)
    args = ap.parse_args()
    import yaml

    cfg = RunConfig.model_validate(yaml.safe_load((args.run / "config.yaml").read_text()))
    df, _ = load_data(cfg.data)
    test = df.iloc[holdout_split(df, cfg.data, seed=cfg.train.seed).test].reset_index(drop=True)
    clf = load_model(args.run)
    positive = clf.classes_[-1]
    pred = clf.predict(test)
    rows = [i for i in range(len(test)) if pred[i] == positive][: args.rows]
    score: collections.Counter[str] = collections.Counter()
    count: collections.Counter[str] = collections.Counter()
    for r in clf.explain(test, rows=rows):
        for w in r["words"]:
            score[w["token"]] += w["score"]
            count[w["token"]] += 1
    mean = {t: score[t] / count[t] for t in score if count[t] >= args.min_count}
    top = sorted(mean, key=lambda t: -mean[t])[: args.top]
    result = {"rows_explained": len(rows),
              "top_words": [{"token": t, "mean_score": round(mean[t], 4), "count": count[t]}
                            for t in top]}
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
