"""IU X-ray: which words most raise the "abnormal" score across the test set?

Explains (layer integrated gradients on the word-CNN's embeddings) the test rows that a
trained IU model calls abnormal and ranks words (seen at least ``--min-count`` times) with
:func:`medfuse.explain.word_importance`: by the lower 95 % bound of their mean attribution,
so a word ranks high when it raises the score strongly and consistently. The plain-mean
ranking is printed too, with the stop words (scikit-learn's English list) each contains::

    .venv/bin/medfuse train iu_xray --out runs/iu
    .venv/bin/python benchmarks/iu_top_words.py --run runs/iu --rows 250
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

from medfuse.config import RunConfig
from medfuse.data import holdout_split, load_data
from medfuse.explain import word_importance
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
    explanations = clf.explain(test, rows=rows)
    ranked = word_importance(explanations, min_count=args.min_count)[: args.top]
    by_mean = sorted(word_importance(explanations, min_count=args.min_count),
                     key=lambda w: -w["mean"])[: args.top]
    result = {
        "rows_explained": len(rows),
        "top_words": [{k: round(v, 4) if isinstance(v, float) else v for k, v in w.items()}
                      for w in ranked],
        "stop_words_in_top": [w["token"] for w in ranked if w["token"] in ENGLISH_STOP_WORDS],
        "by_mean": [w["token"] for w in by_mean],
        "stop_words_in_by_mean": [w["token"] for w in by_mean
                                  if w["token"] in ENGLISH_STOP_WORDS],
    }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
