"""Out-of-fold errors per split group: the families a cross-validation misses whole.

A split group is one patient, or one image and its near copies (:func:`group_labels`).
Grouped folds keep each group whole on one side of every split, so the model meets a
group's images all at once and tends to answer them all the same way. When most of a
group is misclassified out of fold, the images are (one slice of) a case the training
folds do not cover, or their label disagrees with what they show: those groups are the
first place to audit labels, in the spirit of confident learning (Northcutt et al.,
2021), at the level of the group rather than the row.

A *family* is the rows of one group that share a true label (a patient may hold both
classes). :func:`error_families` ranks the families holding errors and summarises how
concentrated the errors are.

>>> import pandas as pd
>>> oof = pd.DataFrame({"y": ["a", "a", "a", "b", "b"], "prediction": ["b", "b", "a", "b", "a"],
...                     "prob_a": [.2, .1, .9, .3, .6], "prob_b": [.8, .9, .1, .7, .4],
...                     "fold": [0, 0, 0, 1, 1], "split_group": [7, 7, 7, 8, 9]})
>>> table, summary = error_families(oof, target="y")
>>> table[["split_group", "label", "n", "wrong"]].values.tolist()
[[7, 'a', 3, 2], [9, 'b', 1, 1]]
>>> summary["errors"], summary["families_with_errors"], summary["missed_whole"]
(3, 2, {'families': 1, 'rows': 3, 'errors': 2})
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

#: ``medfuse cv``'s out-of-fold errors per split group (label-audit candidates)
FAMILIES_FILE = "error_families.csv"
#: a family of two or more rows with at least this share wrong out of fold is "missed whole"
WHOLE = 0.5
#: image names listed per family in the table
EXAMPLES = 5

COLUMNS = ["split_group", "fold", "label", "n", "wrong", "wrong_fraction", "mean_prob_label",
           "images"]


def error_families(oof: pd.DataFrame, target: str, image: str | None = None
                   ) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Families (split group x true label) holding out-of-fold errors, and a summary.

    ``oof`` is ``medfuse cv``'s ``predictions.csv``: the ``target`` column, ``prediction``,
    ``prob_<class>``, ``fold`` and ``split_group``; ``image`` names the image column, whose
    first :data:`EXAMPLES` files per family go to ``images``.

    The table has :data:`COLUMNS`, most errors first, then the lowest mean probability of
    the true label (the most confidently wrong). The summary holds ``errors``, ``rows``,
    ``families``, ``families_with_errors`` and ``missed_whole``: the families of two or
    more rows with at least :data:`WHOLE` of them wrong (``families``, their ``rows`` and
    the ``errors`` they hold).
    """
    label = oof[target].astype(str).to_numpy()
    wrong = label != oof["prediction"].astype(str).to_numpy()
    prob = np.full(len(oof), np.nan)
    for cls in np.unique(label):
        column = f"prob_{cls}"
        if column in oof.columns:
            rows = label == cls
            prob[rows] = pd.to_numeric(oof.loc[rows, column]).to_numpy()
    frame = pd.DataFrame({
        "split_group": oof["split_group"].to_numpy(), "fold": oof["fold"].to_numpy(),
        "label": label, "wrong": wrong, "prob": prob,
        "image": oof[image].astype(str).to_numpy() if image and image in oof else "",
    })
    rows = []
    for (group, cls), part in frame.groupby(["split_group", "label"], sort=False):
        n, errors = len(part), int(part["wrong"].sum())
        rows.append({
            "split_group": group, "fold": part["fold"].iloc[0], "label": cls, "n": n,
            "wrong": errors, "wrong_fraction": errors / n,
            "mean_prob_label": float(part["prob"].mean()),
            "images": " ".join(part["image"].iloc[:EXAMPLES]).strip(),
        })
    families = pd.DataFrame(rows, columns=COLUMNS)
    whole = (families["n"] >= 2) & (families["wrong_fraction"] >= WHOLE)
    table = (families[families["wrong"] > 0]
             .sort_values(["wrong", "mean_prob_label"], ascending=[False, True], kind="stable")
             .reset_index(drop=True))
    summary = {
        "errors": int(wrong.sum()), "rows": len(oof), "families": len(families),
        "families_with_errors": len(table),
        "missed_whole": {"families": int(whole.sum()), "rows": int(families.loc[whole, "n"].sum()),
                         "errors": int(families.loc[whole, "wrong"].sum())},
    }
    return table, summary
