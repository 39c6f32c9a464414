from __future__ import annotations

import itertools
import json
import math
import time

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from medfuse.errors import ConfigError, DataError, NotFittedError
from medfuse.evaluation.bootstrap import bootstrap_weights
from medfuse.evaluation.kernels import MetricKernel
from medfuse.evaluation.metrics import classification_metrics, expected_calibration_error
from medfuse.evaluation.stats import (
    BOOTSTRAP_KEYS,
    CI_KEYS,
    TemperatureScaler,
    bootstrap_ci,
    choose_threshold,
    delong_test,
    paired_bootstrap,
    subgroup_metrics,
)


def _sigmoid(t: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-t))


def _noisy_binary(n: int, seed: int, noise: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    return y, _sigmoid(2 * y - 1 + rng.normal(0, noise, n))


# --------------------------------------------------------------------------- new metric keys


def test_ppv_npv_brier_on_hand_example() -> None:
    y = np.array([1, 1, 0, 0, 1])
    p1 = np.array([0.9, 0.4, 0.6, 0.2, 0.8])
    m = classification_metrics(y, np.column_stack([1 - p1, p1]))
    # predicted [1, 0, 1, 0, 1]: TP=2, FP=1, TN=1, FN=1
    assert m["ppv"] == pytest.approx(2 / 3)
    assert m["npv"] == pytest.approx(0.5)
    assert m["brier"] == pytest.approx((0.01 + 0.36 + 0.36 + 0.04 + 0.04) / 5)
    assert m["threshold"] == 0.5
    nothing_positive = classification_metrics(y, np.column_stack([1 - p1, p1]), threshold=0.95)
    assert nothing_positive["ppv"] is None and nothing_positive["npv"] == pytest.approx(0.4)
    assert nothing_positive["threshold"] == 0.95


def test_multiclass_brier_sums_over_classes() -> None:
    proba = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]])
    m = classification_metrics(np.array([0, 2]), proba)
    assert m["brier"] == pytest.approx(((0.09 + 0.04 + 0.01) + (0.01 + 0.09 + 0.16)) / 2)


# --------------------------------------------------------------------------- bootstrap_ci


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_vectorised_metrics_equal_classification_metrics_on_resampled_rows() -> None:
    rng = np.random.default_rng(3)
    for k in (2, 3):
        for trial in range(6):
            n = 25
            y = rng.integers(0, k, n)
            raw = rng.random((n, k)).round(1) + 0.01  # many tied scores
            p = raw / raw.sum(axis=1, keepdims=True)
            pos = trial % k
            w = rng.integers(0, 3, (4, n)).astype(float)
            w[:, 0] += 1
            got = MetricKernel(y, p, pos, 0.4, BOOTSTRAP_KEYS)(w)
            for b in range(len(w)):
                idx = np.repeat(np.arange(n), w[b].astype(int))
                ref = classification_metrics(y[idx], p[idx], positive=pos, threshold=0.4)
                for key in BOOTSTRAP_KEYS:
                    if ref[key] is None:
                        assert np.isnan(got[key][b]), key
                    else:
                        assert got[key][b] == pytest.approx(ref[key], abs=1e-12), key


def test_ci_is_reproducible_and_depends_on_seed() -> None:
    y, p = _noisy_binary(300, seed=0)
    first = bootstrap_ci(y, p, n_boot=200, seed=7)
    assert first == bootstrap_ci(y, p, n_boot=200, seed=7)
    assert first != bootstrap_ci(y, p, n_boot=200, seed=8)
    assert list(first) == list(CI_KEYS)
    assert json.loads(json.dumps(first)) == first


def test_ci_contains_point_estimate() -> None:
    y, p = _noisy_binary(400, seed=1)
    point = classification_metrics(y, np.column_stack([1 - p, p]))
    ci = bootstrap_ci(y, p, n_boot=500, seed=0)
    for key, interval in ci.items():
        assert interval is not None
        lo, hi = interval
        assert lo < point[key] < hi, key
        assert hi - lo < 0.2, key


def test_perfect_separation_gives_auc_ci_of_one() -> None:
    y = np.array([0] * 20 + [1] * 20)
    p = np.r_[np.linspace(0.0, 0.4, 20), np.linspace(0.6, 1.0, 20)]
    ci = bootstrap_ci(y, p, n_boot=300, keys=("roc_auc", "pr_auc", "accuracy"))
    assert ci == {"roc_auc": [1.0, 1.0], "pr_auc": [1.0, 1.0], "accuracy": [1.0, 1.0]}


def test_undefined_replicates_are_skipped_and_all_undefined_is_none() -> None:
    y = np.array([0, 0, 0, 0, 0, 1])
    p = np.array([0.1, 0.2, 0.3, 0.4, 0.7, 0.9])
    ci = bootstrap_ci(y, p, n_boot=300, keys=("roc_auc", "sensitivity"))
    # a third of the replicates draw no positive; the others still give an interval
    assert ci["roc_auc"] is not None and 0.0 <= ci["roc_auc"][0] <= ci["roc_auc"][1] == 1.0
    assert ci["sensitivity"] == [1.0, 1.0]
    one_class = bootstrap_ci(np.ones(5, int), p[:5], n_boot=50, keys=("roc_auc", "accuracy"))
    assert one_class["roc_auc"] is None and one_class["accuracy"] is not None


def test_group_bootstrap_resamples_whole_groups() -> None:
    rng = np.random.default_rng(0)
    n_groups, size = 30, 10
    y_group = rng.integers(0, 2, n_groups)
    p_group = _sigmoid(2 * y_group - 1 + rng.normal(0, 1.5, n_groups))
    y, p = np.repeat(y_group, size), np.repeat(p_group, size)  # 10 identical rows per group
    groups = np.repeat([f"patient{i}" for i in range(n_groups)], size)
    by_row = bootstrap_ci(y, p, n_boot=500, keys=("accuracy", "roc_auc"))
    by_group = bootstrap_ci(y, p, groups=groups, n_boot=500, keys=("accuracy", "roc_auc"))
    for key in ("accuracy", "roc_auc"):
        row_lo, row_hi = by_row[key]  # type: ignore[misc]
        grp_lo, grp_hi = by_group[key]  # type: ignore[misc]
        assert grp_hi - grp_lo > 2 * (row_hi - row_lo), key


def test_group_weights_keep_groups_together_and_count_repeats() -> None:
    codes = np.array([0, 0, 0, 1, 2, 2])
    for w in bootstrap_weights(codes, 3, 6, n_boot=50, seed=0):
        assert (w[:, 0] == w[:, 1]).all() and (w[:, 1] == w[:, 2]).all()
        assert (w[:, 4] == w[:, 5]).all()
        assert (w[:, [0, 3, 4]].sum(axis=1) == 3).all()  # 3 group draws per replicate
        assert (w == 2).any()  # some group drawn twice counts twice


def test_bootstrap_is_fast() -> None:
    y, p = _noisy_binary(1000, seed=2)
    start = time.perf_counter()
    bootstrap_ci(y, p, n_boot=1000)
    assert time.perf_counter() - start < 2.0


def test_bootstrap_ci_errors() -> None:
    y, p = _noisy_binary(20, seed=0)
    with pytest.raises(ConfigError, match=r"'keys'.*'roc_auc'.*'auroc'"):
        bootstrap_ci(y, p, keys=["auroc"])
    with pytest.raises(ConfigError, match=r"'n_boot'.*>= 1.*0"):
        bootstrap_ci(y, p, n_boot=0)
    with pytest.raises(ConfigError, match="'alpha'"):
        bootstrap_ci(y, p, alpha=1.5)
    with pytest.raises(DataError, match=r"19 rows.*20"):
        bootstrap_ci(y[:-1], p)
    with pytest.raises(DataError, match="class index 2"):
        bootstrap_ci(np.r_[y[:-1], 2], p)
    with pytest.raises(DataError, match="'groups'"):
        bootstrap_ci(y, p, groups=np.arange(5))


# --------------------------------------------------------------------------- DeLong


def _delong_by_definition(y: np.ndarray, a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """O(m * n) DeLong (1988) with the Heaviside kernel: (delta, variance of delta)."""
    comps10, comps01 = [], []
    for s in (a, b):
        x, z = s[y == 1], s[y == 0]
        psi = (x[:, None] > z[None, :]) + 0.5 * (x[:, None] == z[None, :])
        comps10.append(psi.mean(axis=1))
        comps01.append(psi.mean(axis=0))
    s10, s01 = np.cov(np.vstack(comps10)), np.cov(np.vstack(comps01))
    contrast = np.array([1.0, -1.0])
    var = contrast @ s10 @ contrast / (y == 1).sum() + contrast @ s01 @ contrast / (y == 0).sum()
    return float(comps10[0].mean() - comps10[1].mean()), float(var)


def test_delong_matches_sklearn_auc_and_direct_formula() -> None:
    rng = np.random.default_rng(5)
    y = rng.integers(0, 2, 120)
    a = (y + rng.normal(0, 1.0, 120)).round(1)  # ties on purpose
    b = (y + rng.normal(0, 1.4, 120)).round(1)
    res = delong_test(y, a, b)
    assert res["auc_a"] == pytest.approx(roc_auc_score(y, a))
    assert res["auc_b"] == pytest.approx(roc_auc_score(y, b))
    delta, var = _delong_by_definition(y, a, b)
    assert res["delta"] == pytest.approx(delta)
    assert res["z"] == pytest.approx(delta / math.sqrt(var))
    assert res["p_value"] == pytest.approx(math.erfc(abs(res["z"]) / math.sqrt(2)))
    lo, hi = res["ci95"]
    assert lo < delta < hi and hi - lo == pytest.approx(2 * 1.959964 * math.sqrt(var), rel=1e-5)


def test_delong_identical_scores() -> None:
    y, p = _noisy_binary(50, seed=3)
    res = delong_test(y, p, p.copy())
    assert res["delta"] == 0.0 and res["p_value"] == 1.0 and res["z"] == 0.0
    assert res["ci95"] == [0.0, 0.0]


def test_delong_agrees_with_paired_bootstrap() -> None:
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 300)
    a = _sigmoid(y + rng.normal(0, 1.0, 300))
    b = _sigmoid(y + rng.normal(0, 1.3, 300))
    dl = delong_test(y, a, b)
    pb = paired_bootstrap(y, a, b, n_boot=2000, seed=0)
    assert pb["delta"] == pytest.approx(dl["delta"], abs=1e-6)
    assert 0.001 < dl["p_value"] < 0.05 and 0.001 < pb["p_value"] < 0.05
    assert abs(math.log(dl["p_value"] / pb["p_value"])) < math.log(2)
    width_dl = dl["ci95"][1] - dl["ci95"][0]
    width_pb = pb["ci95"][1] - pb["ci95"][0]
    assert width_pb == pytest.approx(width_dl, rel=0.2)


def test_delong_errors() -> None:
    with pytest.raises(DataError, match="at least 2 of each"):
        delong_test(np.array([0, 0, 0, 1]), np.arange(4.0), np.arange(4.0))
    with pytest.raises(DataError, match="'score_b'"):
        delong_test(np.array([0, 0, 1, 1]), np.arange(4.0), np.arange(3.0))
    with pytest.raises(DataError, match="class index 2"):
        delong_test(np.array([0, 1, 2, 1]), np.arange(4.0), np.arange(4.0))


# --------------------------------------------------------------------------- paired bootstrap


def test_paired_bootstrap_identical_and_clearly_better_models() -> None:
    y, p = _noisy_binary(200, seed=4)
    same = paired_bootstrap(y, p, p, n_boot=300)
    assert same == {"delta": 0.0, "ci95": [0.0, 0.0], "p_value": 1.0}
    coin = np.random.default_rng(0).random(200)
    better = paired_bootstrap(y, p, coin, metric="accuracy", n_boot=300, seed=1)
    assert better["delta"] > 0.2 and better["ci95"][0] > 0
    assert better["p_value"] == pytest.approx(2 / 301)  # never 0
    assert better == paired_bootstrap(y, p, coin, metric="accuracy", n_boot=300, seed=1)
    worse = paired_bootstrap(y, coin, p, metric="brier", n_boot=300, seed=1)
    assert worse["delta"] > 0 and worse["p_value"] < 0.01


def test_paired_bootstrap_errors() -> None:
    y, p = _noisy_binary(30, seed=0)
    with pytest.raises(ConfigError, match=r"'metric'.*'auc'"):
        paired_bootstrap(y, p, p, metric="auc")
    with pytest.raises(DataError, match="shape"):
        paired_bootstrap(y, p, np.column_stack([p, p, p]) / 3)
    with pytest.raises(DataError, match="undefined"):
        paired_bootstrap(np.ones(30, int), p, p)


# --------------------------------------------------------------------------- thresholds


def _sensitivity(y: np.ndarray, score: np.ndarray, threshold: float) -> float:
    return float((score[y == 1] >= threshold).mean())


def test_choose_threshold_methods_on_hand_example() -> None:
    y = np.array([0, 0, 0, 1, 0, 1, 1, 1])
    s = np.array([0.1, 0.2, 0.3, 0.35, 0.5, 0.6, 0.7, 0.9])
    assert choose_threshold(y, s) == 0.5
    assert choose_threshold(y, s, "fixed", 0.3) == 0.3
    # Youden: at 0.6, sens 3/4 and spec 4/4 -> J = 0.75, better than any other cut
    assert choose_threshold(y, s, "youden") == pytest.approx(0.6)
    for target, expected in [(0.5, 0.7), (0.75, 0.6), (0.76, 0.35), (1.0, 0.35)]:
        t = choose_threshold(y, s, "sensitivity", target)
        assert t == pytest.approx(expected)
        assert _sensitivity(y, s, t) >= target
        assert _sensitivity(y, s, t + 1e-9) < target  # the highest such threshold


def test_choose_threshold_accepts_bool_labels_and_clips() -> None:
    y = np.array([True, False, True])
    assert choose_threshold(y, np.array([0.2, 0.1, 0.3]), "sensitivity", 0.5) == 0.3
    assert 0.0 <= choose_threshold(y, np.array([0.9, 0.0, 1.0]), "youden") <= 1.0


def test_choose_threshold_errors() -> None:
    y, s = np.array([0, 1, 0, 1]), np.array([0.1, 0.8, 0.4, 0.6])
    with pytest.raises(ConfigError, match=r"'method'.*'fixed', 'youden', 'sensitivity'.*'yuden'"):
        choose_threshold(y, s, "yuden")
    with pytest.raises(ConfigError, match=r"'value'.*\(0, 1\].*None"):
        choose_threshold(y, s, "sensitivity")
    with pytest.raises(ConfigError, match=r"'value'.*0"):
        choose_threshold(y, s, "sensitivity", 0)
    with pytest.raises(ConfigError, match=r"'value'.*1.5"):
        choose_threshold(y, s, "fixed", 1.5)
    with pytest.raises(DataError, match="both classes"):
        choose_threshold(np.zeros(4, int), s, "youden")


# --------------------------------------------------------------------------- temperature


def test_temperature_scaling_fixes_overconfidence() -> None:
    rng = np.random.default_rng(0)
    logit = rng.normal(0, 1.5, 5000)
    y = (rng.random(5000) < _sigmoid(logit)).astype(int)
    p1 = _sigmoid(3 * logit)  # three times over-confident
    proba = np.column_stack([1 - p1, p1])
    scaler = TemperatureScaler().fit(proba, y)
    assert scaler.temperature_ == pytest.approx(3.0, rel=0.1)
    calibrated = scaler.transform(proba)
    assert (calibrated.argmax(axis=1) == proba.argmax(axis=1)).all()
    assert np.allclose(calibrated.sum(axis=1), 1.0)

    def ece(p: np.ndarray) -> float:
        return expected_calibration_error(p.argmax(axis=1) == y, p.max(axis=1))

    assert ece(proba) > 0.1 and ece(calibrated) < ece(proba) / 4
    assert scaler.transform(p1) == pytest.approx(calibrated[:, 1])  # 1-D in, 1-D out


def test_temperature_scaler_round_trip_and_errors() -> None:
    with pytest.raises(NotFittedError, match="fit"):
        TemperatureScaler().transform(np.array([[0.2, 0.8]]))
    scaler = TemperatureScaler.from_dict(json.loads(json.dumps({"temperature": 2.0})))
    assert scaler.to_dict() == {"temperature": 2.0}
    assert scaler.transform(np.array([[0.1, 0.9]]))[0, 1] == pytest.approx(0.75)
    for bad in ({}, {"temperature": 0}, {"temperature": -1.0}, {"temperature": "2"}):
        with pytest.raises(ConfigError, match="'temperature'"):
            TemperatureScaler.from_dict(bad)


# --------------------------------------------------------------------------- subgroups


def _subgroup_case() -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    n = 240
    y = rng.integers(0, 2, n)
    site = np.array(["A", "B", "C"] * (n // 3), dtype=object)
    p1 = np.clip(0.15 + 0.7 * y + rng.normal(0, 0.1, n), 0.01, 0.99)
    bad = site == "C"
    p1[bad] = 1 - p1[bad]  # the model is wrong on site C
    site[:6] = None
    age = rng.uniform(20, 80, n).round(1)
    age[10:15] = np.nan
    frame = pd.DataFrame({"site": site, "age": age}, index=np.arange(1000, 1000 + n))
    return frame, y, np.column_stack([1 - p1, p1])


def test_subgroup_metrics_flags_bad_subgroup_only() -> None:
    frame, y, proba = _subgroup_case()
    rows = subgroup_metrics(frame, y, proba, {"site": "categorical"})
    by_level = {r["level"]: r for r in rows}
    assert list(by_level) == ["A", "B", "C", "(missing)"]
    assert by_level["C"]["flagged"] and by_level["C"]["accuracy"] < 0.2
    assert not by_level["A"]["flagged"] and not by_level["B"]["flagged"]
    assert not by_level["(missing)"]["flagged"]  # too small to flag (n < min_count)
    assert sum(r["n"] for r in rows) == len(y)
    c = by_level["C"]
    sel = (frame["site"] == "C").to_numpy()
    assert c["positives"] == int(y[sel].sum())
    assert c["roc_auc"] == pytest.approx(roc_auc_score(y[sel], proba[sel, 1]))
    assert set(c) == {"column", "level", "n", "positives", "accuracy", "roc_auc",
                      "sensitivity", "specificity", "flagged"}
    json.dumps(rows)


def test_subgroup_continuous_bins_have_readable_labels() -> None:
    frame, y, proba = _subgroup_case()
    rows = subgroup_metrics(frame, y, proba, {"age": "continuous"}, bins=4)
    levels = [r["level"] for r in rows]
    assert len(levels) == 5 and levels[-1] == "(missing)"
    assert levels[0].startswith("[") and levels[0].endswith(")") and levels[3].endswith("]")
    edges = np.quantile(frame["age"].dropna(), [0, 0.25, 0.5, 0.75, 1])
    lo, hi = levels[1][1:-1].split(", ")
    assert float(lo) == pytest.approx(edges[1], rel=1e-2)
    assert float(hi) == pytest.approx(edges[2], rel=1e-2)
    assert all(len(part.replace(".", "").lstrip("0")) <= 4 for part in (lo, hi))
    age = frame["age"].to_numpy()
    inner = [((age >= a) & (age < b)).sum() for a, b in itertools.pairwise(edges[:-1])]
    assert [r["n"] for r in rows] == [*inner, (age >= edges[-2]).sum(), 5]  # last bin closed
    # equal quantiles merge: a column with two values gives two bins
    two = pd.DataFrame({"x": [1.0] * 120 + [2.0] * 120})
    rows2 = subgroup_metrics(two, y, proba, {"x": "continuous"})
    assert [(r["level"], r["n"]) for r in rows2] == [("[1.0, 1.5)", 120), ("[1.5, 2.0]", 120)]


def test_subgroup_errors() -> None:
    frame, y, proba = _subgroup_case()
    with pytest.raises(DataError, match=r"'sex'.*\['site', 'age'\]"):
        subgroup_metrics(frame, y, proba, {"sex": "categorical"})
    with pytest.raises(ConfigError, match=r"categorical.*'numeric'"):
        subgroup_metrics(frame, y, proba, {"age": "numeric"})
    with pytest.raises(DataError, match="non-numeric"):
        subgroup_metrics(frame, y, proba, {"site": "continuous"})
    with pytest.raises(DataError, match="rows"):
        subgroup_metrics(frame.iloc[:10], y, proba, {"site": "categorical"})


def test_subgroup_accuracy_flag_respects_margin() -> None:
    # all positives (ROC AUC undefined): only accuracy can flag; overall accuracy is 0.82
    correct = np.r_[np.arange(50) < 45, np.arange(50) < 43, np.arange(50) < 35]
    p1 = np.where(correct, 0.9, 0.1)
    frame = pd.DataFrame({"g": ["good"] * 50 + ["slight"] * 50 + ["bad"] * 50})
    rows = subgroup_metrics(frame, np.ones(150, int), p1, {"g": "categorical"})
    flags = {r["level"]: (r["accuracy"], r["flagged"]) for r in rows}
    assert flags == {"bad": (0.7, True), "good": (0.9, False), "slight": (0.86, False)}
    none = subgroup_metrics(frame, np.ones(150, int), p1, {"g": "categorical"}, min_count=51)
    assert not any(r["flagged"] for r in none)


def test_subgroup_auc_flag_with_equal_accuracy() -> None:
    neg1, pos1 = [0.1] * 8 + [0.55] * 2, list(np.linspace(0.6, 0.9, 10))  # acc 0.9, AUC 1
    neg2, pos2 = [0.1] * 9 + [0.95], [0.6] * 9 + [0.4]  # acc 0.9, AUC 0.9
    p1 = np.array(neg1 + pos1 + neg2 + pos2)
    y = np.array(([0] * 10 + [1] * 10) * 2)
    frame = pd.DataFrame({"g": ["g1"] * 20 + ["g2"] * 20})
    rows = subgroup_metrics(frame, y, p1, {"g": "categorical"}, flag_margin=0.02)
    overall_auc = roc_auc_score(y, p1)  # 0.945
    assert [r["accuracy"] for r in rows] == [0.9, 0.9]
    assert [r["roc_auc"] for r in rows] == [1.0, pytest.approx(0.9)]
    assert overall_auc - 0.9 > 0.02
    assert [r["flagged"] for r in rows] == [False, True]
    loose = subgroup_metrics(frame, y, p1, {"g": "categorical"}, flag_margin=0.05)
    assert not any(r["flagged"] for r in loose)
