"""The label audit of a cross-validation: suspect labels per row and per family, and a montage.

``medfuse cv`` predicts every row out of fold, so each row's probabilities come from a
model that never saw it: the input confident learning needs
(:func:`medfuse.scoring.label_issues.find_issues`, i.e. cleanlab). :func:`label_audit`
turns ``predictions.csv`` into

* ``label_issues.csv`` (:data:`ISSUE_COLUMNS`): one row per table row, most suspect first;
* ``label_issue_families.csv`` (:data:`FAMILY_COLUMNS`): the same per family (the rows of
  one split group -- a patient, or an image and its near copies -- sharing a label), which
  share one answer, families with most suspect rows first;
* a summary for ``cv_metrics.json["label_issues"]``: counts, and how many rows and
  families a clean-up would touch.

>>> import pandas as pd
>>> oof = pd.DataFrame({"y": list("aaaabbbb"), "row": range(8),
...                     "split_group": [0, 0, 1, 2, 3, 4, 5, 6],
...                     "prob_a": [.9, .8, .9, .1, .2, .1, .3, .05]})
>>> oof["prob_b"] = 1 - oof["prob_a"]
>>> table, families, summary = label_audit(oof, target="y")
>>> top = table.iloc[0]
>>> int(top["row"]), top["label"], top["suggested_label"], bool(top["is_issue"])
(3, 'a', 'b', True)
>>> summary["issues"], summary["families_with_issues"]
(1, 1)
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medfuse.errors import DataError
from medfuse.scoring.label_issues import FILTER_METHOD, QUALITY_METHOD, find_issues

ISSUES_FILE = "label_issues.csv"
ISSUE_FAMILIES_FILE = "label_issue_families.csv"
ISSUE_COLUMNS = ["row", "label", "suggested_label", "quality", "split_group", "is_issue",
                 "family_issue"]
FAMILY_COLUMNS = ["split_group", "label", "n", "issues", "issue_fraction", "mean_quality",
                  "suggested_label", "rows", "images"]
#: a family with at least this share of its rows flagged is relabelled whole by a clean-up
FAMILY_MAJORITY = 0.5
#: rows / image names listed per family
EXAMPLES = 5
METHOD = (f"cleanlab confident learning ({FILTER_METHOD}) on out-of-fold probabilities; "
          f"quality = {QUALITY_METHOD} (the probability of the given label)")


def probability_columns(frame: pd.DataFrame) -> list[str]:
    """The ``prob_<class>`` columns of a predictions table, in order (``raw_prob_*`` left out)."""
    return [c for c in frame.columns if str(c).startswith("prob_")]


def is_multilabel(oof: pd.DataFrame) -> bool:
    """A multi-label predictions table: a ``pred_<label>`` column beside every ``prob_``."""
    columns = probability_columns(oof)
    return bool(columns) and all(f"pred_{c[len('prob_'):]}" in oof.columns for c in columns)


def label_audit(oof: pd.DataFrame, target: str, image: str | None = None,
                source: str = "predictions.csv", sep: str = "|",
                ) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """Row table, family table and summary of the label issues in ``oof``.

    ``oof`` holds the ``target`` column and ``prob_<class>`` columns, and ideally ``row``
    (the input table's 0-based row) and ``split_group`` (missing: the row's position and
    a group per row). ``image`` names an image column to list per family. ``source``
    names the table in error messages.

    A multi-label table (:func:`is_multilabel`; labels joined by ``sep`` in ``target``) is
    audited with cleanlab's multi-label filter: ``label`` is the row's given labels,
    ``suggested_label`` the model's predicted ones (``pred_<label>``), and
    ``suspect_labels`` the labels whose own binary audit flags the row.
    """
    if target not in oof.columns:
        raise DataError(f"{source} has no '{target}' column (the target): the label audit "
                        "needs the labels as given next to the out-of-fold probabilities.")
    columns = probability_columns(oof)
    if not columns:
        raise DataError(f"{source} has no prob_<class> columns: it holds no probabilities to "
                        "audit the labels with. Rebuild it with `medfuse cv`.")
    classes = [c[len("prob_"):] for c in columns]
    if is_multilabel(oof):
        return _multilabel_audit(oof, target, image, classes, sep)
    labels = oof[target].astype(str).to_numpy()
    unknown = sorted(set(labels) - set(classes))
    if unknown:
        first = int(np.flatnonzero(~np.isin(labels, classes))[0])
        raise DataError(f"{source}, row {first}: label {labels[first]!r} has no probability "
                        f"column (labels {unknown} not among the classes {classes}).")
    proba = oof[columns].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float64)
    index = {c: i for i, c in enumerate(classes)}
    codes = np.array([index[v] for v in labels], dtype=int)
    found = find_issues(codes, proba)
    rows = oof["row"].to_numpy() if "row" in oof else np.arange(len(oof))
    groups = oof["split_group"].to_numpy() if "split_group" in oof else rows
    table = pd.DataFrame({
        "row": rows, "label": labels, "suggested_label": np.array(classes, dtype=object)[
            found.suggested] if len(oof) else np.array([], dtype=object),
        "quality": np.round(found.quality, 6), "split_group": groups,
        "is_issue": found.is_issue,
    })
    if "fold" in oof:
        table["fold"] = oof["fold"].to_numpy()
    table["image"] = (oof[image].astype(str).to_numpy() if image and image in oof else "")
    table = table.sort_values(["is_issue", "quality"], ascending=[False, True],
                              kind="stable").reset_index(drop=True)
    families = issue_families(table)
    summary = _summary(table, families, classes, found.notes)
    table = _with_family_issue(table, families)
    if not image or image not in oof:
        table = table.drop(columns="image")
    return table, families, summary


def _with_family_issue(table: pd.DataFrame, families: pd.DataFrame) -> pd.DataFrame:
    """``family_issue`` after ``is_issue``: the row's family (split group x label) has at
    least :data:`FAMILY_MAJORITY` of its rows flagged, so a clean-up relabels it whole."""
    whole = families.loc[families["issue_fraction"] >= FAMILY_MAJORITY, ["split_group", "label"]]
    keys = pd.MultiIndex.from_frame(table[["split_group", "label"]].astype(str))
    flagged = keys.isin(pd.MultiIndex.from_frame(whole.astype(str))) if len(whole) else \
        np.zeros(len(table), dtype=bool)
    table.insert(list(table.columns).index("is_issue") + 1, "family_issue",
                 np.asarray(flagged, dtype=bool))
    return table


def _given_labels(oof: pd.DataFrame, target: str, classes: Sequence[str], sep: str
                  ) -> np.ndarray:
    """The ``(n, L)`` 0/1 matrix of a multi-label target column (empty / NaN: no label)."""
    from medfuse.data.labels import multi_hot

    return multi_hot(oof[target].fillna("").astype(str), classes, sep, target)


def _multilabel_audit(oof: pd.DataFrame, target: str, image: str | None,
                      classes: list[str], sep: str
                      ) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    from medfuse.scoring.label_issues import find_multilabel_issues

    hot = _given_labels(oof, target, classes, sep)
    proba = oof[[f"prob_{c}" for c in classes]].apply(pd.to_numeric, errors="coerce"
                                                      ).to_numpy(dtype=np.float64)
    found = find_multilabel_issues(hot, proba)
    names = np.asarray(classes, dtype=object)
    pred = oof[[f"pred_{c}" for c in classes]].to_numpy(dtype=int).astype(bool)
    rows = oof["row"].to_numpy() if "row" in oof else np.arange(len(oof))
    groups = oof["split_group"].to_numpy() if "split_group" in oof else rows
    table = pd.DataFrame({
        "row": rows, "label": [sep.join(names[h.astype(bool)]) for h in hot],
        "suggested_label": [sep.join(names[p]) for p in pred],
        "quality": np.round(found.quality, 6), "split_group": groups,
        "is_issue": found.is_issue,
        "suspect_labels": [sep.join(names[s]) for s in found.suspect],
    })
    if "fold" in oof:
        table["fold"] = oof["fold"].to_numpy()
    table["image"] = (oof[image].astype(str).to_numpy() if image and image in oof else "")
    order = np.lexsort((table["quality"].to_numpy(), ~table["is_issue"].to_numpy()))
    suspect = found.suspect[order]
    table = table.iloc[order].reset_index(drop=True)
    families = issue_families(table)
    summary = _summary(table, families, classes, found.notes)
    summary["by_label"] = {c: {"rows": int(hot[:, j].sum()),
                               "issues": int(found.suspect[:, j].sum()),
                               "issues_in_flagged_rows": int(
                                   (suspect[:, j] & table["is_issue"].to_numpy()).sum())}
                           for j, c in enumerate(classes)}
    summary["method"] = (f"cleanlab confident learning, multi-label ({FILTER_METHOD}, "
                         "multi_label=True) on out-of-fold probabilities; quality = cleanlab's "
                         "multi-label self-confidence (exponential moving average over labels); "
                         "suspect_labels: each label audited alone as a binary task")
    summary["multilabel"] = True
    table = _with_family_issue(table, families)
    if not image or image not in oof:
        table = table.drop(columns="image")
    return table, families, summary


def pool_predictions(members: Sequence[tuple[str, pd.DataFrame]], target: str, sep: str = "|"
                     ) -> tuple[pd.DataFrame, list[dict[str, Any]]]:
    """Out-of-sample predictions of several models of one table, pooled for the audit.

    ``members`` are ``(source, predictions)`` pairs, the first one the run audited; each
    holds ``row``, ``target`` and the same ``prob_<class>`` columns, every row of the first
    once (rows the first lacks are left out: a holdout run's test rows pooled with a
    cross-validation), the same label per row. The pooled table is the first one with its
    probabilities replaced by their mean over the members, each weighted by its accuracy on
    the labels as given (cleanlab's ensemble convention,
    ``weight_ensemble_members_by="accuracy"``); multi-label ``pred_<label>`` columns become
    ``pooled probability >= 0.5``. Models that fail differently -- a fine-tuned network and
    frozen features with a linear head -- disagree on hard rows but agree on wrong labels
    (on Br35H the pool flags 25 of 33 wrongly labelled images, the network alone 20;
    ``benchmarks/README.md``, issue 25). Also returns each member's source, accuracy and
    weight.
    """
    if not members:
        raise ValueError("pool_predictions needs at least one predictions table")
    first_source, first = members[0]
    columns = probability_columns(first)
    aligned: list[pd.DataFrame] = []
    for source, frame in members:
        for col in ("row", target):
            if col not in frame.columns:
                raise DataError(f"{source} has no '{col}' column: pooling predictions needs "
                                "the input table's row and label beside the probabilities "
                                "(rebuild it with `medfuse cv`).")
        if probability_columns(frame) != columns:
            raise DataError(f"{source} has the probability columns "
                            f"{probability_columns(frame)}, {first_source} has {columns}: "
                            "pool predictions of models of the same classes only.")
        rows = frame["row"]
        if rows.duplicated().any():
            dup = int(rows[rows.duplicated()].iloc[0])
            raise DataError(f"{source}, row {dup}: predicted twice; pool out-of-fold "
                            "predictions (every row once), e.g. of `medfuse cv` runs.")
        missing = sorted(set(first["row"]) - set(rows))
        if missing:
            raise DataError(f"{source} has no prediction for row {missing[0]} "
                            f"({len(missing)} of the {len(first)} rows of {first_source} "
                            "missing): pool predictions of the same table's rows.")
        frame = frame.set_index("row").loc[first["row"]]
        given = frame[target].astype(str).to_numpy()
        differ = np.flatnonzero(given != first[target].astype(str).to_numpy())
        if len(differ):
            k = differ[0]
            raise DataError(f"row {int(first['row'].iloc[k])}: labelled {given[k]!r} in "
                            f"{source} but {first[target].astype(str).iloc[k]!r} in "
                            f"{first_source}: pool predictions of the same labels.")
        aligned.append(frame)
    classes = np.array([c[len("prob_"):] for c in columns], dtype=object)
    hot = _given_labels(first, target, list(classes), sep) if is_multilabel(first) else None
    given = first[target].astype(str).to_numpy()  # the same in every member (checked above)
    probas, accuracies = [], []
    for frame in aligned:
        proba = frame[columns].apply(pd.to_numeric, errors="coerce").to_numpy(np.float64)
        right = (proba >= 0.5) == hot if hot is not None else \
            classes[proba.argmax(axis=1)] == given
        accuracies.append(float(np.mean(right)))
        probas.append(proba)
    weights = np.asarray(accuracies) / max(sum(accuracies), 1e-12)
    pooled = first.copy()
    pooled[columns] = np.tensordot(weights, np.stack(probas), axes=1)
    if hot is not None:
        for c in columns:
            pooled[f"pred_{c[len('prob_'):]}"] = (pooled[c] >= 0.5).astype(int)
    info = [{"source": source, "accuracy": round(a, 4), "weight": round(float(w), 4)}
            for (source, _), a, w in zip(members, accuracies, weights, strict=True)]
    return pooled, info


def issue_families(table: pd.DataFrame) -> pd.DataFrame:
    """Families (split group x given label) holding label issues, most suspect rows first."""
    out = []
    for (group, label), part in table.groupby(["split_group", "label"], sort=False):
        issues = int(part["is_issue"].sum())
        if not issues:
            continue
        suggested = part.loc[part["is_issue"], "suggested_label"].mode()
        images = part["image"].astype(str) if "image" in part else pd.Series([], dtype=str)
        out.append({
            "split_group": group, "label": label, "n": len(part), "issues": issues,
            "issue_fraction": round(issues / len(part), 4),
            "mean_quality": round(float(part["quality"].mean()), 6),
            "suggested_label": str(suggested.iloc[0]),
            "rows": " ".join(str(r) for r in part["row"].iloc[:EXAMPLES]),
            "images": " ".join(Path(p).name for p in images.iloc[:EXAMPLES] if p).strip(),
        })
    families = pd.DataFrame(out, columns=FAMILY_COLUMNS)
    return families.sort_values(["issues", "issue_fraction", "mean_quality"],
                                ascending=[False, False, True], kind="stable"
                                ).reset_index(drop=True)


def _summary(table: pd.DataFrame, families: pd.DataFrame, classes: Sequence[str],
             notes: list[str]) -> dict[str, Any]:
    issues = table["is_issue"].to_numpy(dtype=bool)
    majority = families[families["issue_fraction"] >= FAMILY_MAJORITY]
    n_families = int(table.groupby(["split_group", "label"]).ngroups) if len(table) else 0
    return {
        "method": METHOD, "rows": len(table), "issues": int(issues.sum()),
        "issue_rate": round(float(issues.mean()), 4) if len(table) else 0.0,
        "by_label": {c: {"rows": int((table["label"] == c).sum()),
                         "issues": int((issues & (table["label"] == c).to_numpy()).sum())}
                     for c in classes},
        "families": n_families, "families_with_issues": len(families),
        "cleanup": {"rows": int(issues.sum()), "families": len(majority),
                    "family_rows": int(majority["n"].sum())},
        "notes": list(notes),
    }


def plot_montage(table: pd.DataFrame, n: int = 16, columns: int = 4,
                 describe: Sequence[str] = ()) -> bytes | None:
    """PNG montage of the ``n`` most suspect flagged rows' images, or None without images.

    Each tile says the row, its label, the suggestion and the quality score; a missing
    image file is a grey tile saying so.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from PIL import Image

    if "image" not in table:
        return None
    top = table[table["is_issue"]].head(n)
    if top.empty:
        return None
    rows = int(np.ceil(len(top) / columns))
    fig = Figure(figsize=(2.4 * columns, 2.6 * rows))
    FigureCanvasAgg(fig)
    for k, (_, r) in enumerate(top.iterrows()):
        ax = fig.add_subplot(rows, columns, k + 1)
        ax.set_axis_off()
        path = r["image"]
        if not isinstance(path, str) or not path.strip():  # a row without an image
            ax.text(0.5, 0.5, "no image in this row", ha="center", va="center")
        else:
            try:
                with Image.open(path) as im:
                    im.thumbnail((256, 256))
                    ax.imshow(np.asarray(im.convert("RGB")))
            except (OSError, ValueError):
                ax.text(0.5, 0.5, "image not found", ha="center", va="center")
        ax.set_title(f"row {r['row']}: {r['label']} -> {r['suggested_label']}\n"
                     f"quality {r['quality']:.3f}", fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    return buf.getvalue()


def pooled_metrics(oof: pd.DataFrame, target: str, sep: str = "|") -> dict[str, Any]:
    """Accuracy (of ``prediction``), balanced accuracy and ROC AUC pooled over ``oof``'s rows.

    Multi-label: label-wise accuracy, subset accuracy and the macro ROC AUC.
    """
    from sklearn.metrics import accuracy_score, balanced_accuracy_score, roc_auc_score

    columns = probability_columns(oof)
    classes = [c[len("prob_"):] for c in columns]
    out: dict[str, Any] = {"n": len(oof)}
    if not len(oof):
        return out
    if is_multilabel(oof):
        return {**out, **_pooled_multilabel(oof, target, classes, sep)}
    y = oof[target].astype(str).to_numpy()
    pred = oof["prediction"].astype(str).to_numpy()
    out["accuracy"] = round(float(accuracy_score(y, pred)), 4)
    out["balanced_accuracy"] = round(float(balanced_accuracy_score(y, pred)), 4)
    present = set(y)
    if len(present) < 2:
        out["roc_auc"] = None
    elif len(classes) == 2:
        out["roc_auc"] = round(float(roc_auc_score(y == classes[1], oof[columns[1]])), 4)
    elif present == set(classes):
        proba = oof[columns].to_numpy(dtype=np.float64)
        proba = proba / np.clip(proba.sum(axis=1, keepdims=True), 1e-12, None)
        out["roc_auc"] = round(float(roc_auc_score(y, proba, labels=classes,
                                                   multi_class="ovr")), 4)
    else:
        out["roc_auc"] = None
    return out


def _pooled_multilabel(oof: pd.DataFrame, target: str, classes: list[str], sep: str
                       ) -> dict[str, Any]:
    from sklearn.metrics import roc_auc_score

    hot = _given_labels(oof, target, classes, sep)
    pred = oof[[f"pred_{c}" for c in classes]].to_numpy(dtype=int)
    proba = oof[[f"prob_{c}" for c in classes]].to_numpy(dtype=np.float64)
    aucs = [float(roc_auc_score(hot[:, j], proba[:, j])) for j in range(len(classes))
            if 0 < hot[:, j].sum() < len(hot)]
    return {"accuracy": round(float((pred == hot).mean()), 4),
            "subset_accuracy": round(float((pred == hot).all(axis=1).mean()), 4),
            "roc_auc": round(float(np.mean(aucs)), 4) if aucs else None}
