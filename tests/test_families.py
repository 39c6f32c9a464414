"""Out-of-fold errors per split group (``medfuse cv``'s error_families.csv)."""

from __future__ import annotations

import pandas as pd

from medfuse.evaluation.families import COLUMNS, error_families


def oof_frame() -> pd.DataFrame:
    # group 1: four "no" rows, three called "yes"; group 2: a patient with both labels,
    # its one "yes" row wrong; group 3: one wrong row alone; group 4: all right
    rows = [(1, "no", "yes", .1), (1, "no", "yes", .3), (1, "no", "yes", .2), (1, "no", "no", .8),
            (2, "no", "no", .9), (2, "no", "no", .7), (2, "yes", "no", .4),
            (3, "yes", "no", .45), (4, "yes", "yes", .9), (4, "yes", "yes", .8)]
    return pd.DataFrame({
        "img": [f"x{i}.png" for i in range(len(rows))],
        "tumor": [r[1] for r in rows], "prediction": [r[2] for r in rows],
        # probability of the row's own label given above; the other class takes the rest
        "prob_yes": [r[3] if r[1] == "yes" else 1 - r[3] for r in rows],
        "prob_no": [r[3] if r[1] == "no" else 1 - r[3] for r in rows],
        "fold": [0, 0, 0, 0, 1, 1, 1, 2, 2, 2], "split_group": [r[0] for r in rows],
    })


def test_families_rank_errors_and_count_the_ones_missed_whole() -> None:
    table, summary = error_families(oof_frame(), target="tumor", image="img")
    assert list(table.columns) == COLUMNS
    got = table[["split_group", "label", "n", "wrong", "fold"]].values.tolist()
    # most errors first; ties: the more confidently wrong (lower p(true label)) first
    assert got == [[1, "no", 4, 3, 0], [2, "yes", 1, 1, 1], [3, "yes", 1, 1, 2]]
    assert table.loc[0, "wrong_fraction"] == 0.75
    assert abs(table.loc[0, "mean_prob_label"] - 0.35) < 1e-9
    assert table.loc[0, "images"] == "x0.png x1.png x2.png x3.png"
    # a patient holding both labels is two families; one-row families are never "whole"
    assert summary == {"errors": 5, "rows": 10, "families": 5, "families_with_errors": 3,
                       "missed_whole": {"families": 1, "rows": 4, "errors": 3}}


def test_families_read_the_string_columns_of_read_back_folds() -> None:
    as_read = oof_frame().astype(str)  # folds read back from disk come as text
    table, summary = error_families(as_read, target="tumor")
    assert summary["errors"] == 5 and table["images"].eq("").all()
    assert table["wrong"].tolist() == [3, 1, 1]
