"""Tabular preprocessing, fitted on training rows only and saved as JSON.

* categorical columns -> integer codes; code 0 is the "unknown" bucket, used for
  missing values and for categories never seen in training;
* continuous columns -> median imputation, a missing-indicator feature for each
  column that had missing values in training, then standardisation (clipped to
  +-``MAX_ABS_Z`` so no input overflows float32).

>>> import pandas as pd
>>> train = pd.DataFrame({"age": [40.0, None, 60.0], "sex": ["f", "m", "f"]})
>>> tp = TabularPreprocessor({"age": "continuous", "sex": "categorical"}).fit(train)
>>> cat, cont = tp.transform(pd.DataFrame({"age": [50.0], "sex": ["x"]}))
>>> cat.tolist(), tp.continuous_names
([[0]], ['age', 'age__missing'])
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from medfuse.errors import DataError, NotFittedError

UNKNOWN = "<unknown>"
MAX_ABS_Z = 1e6  # standardised values are clipped to +-this


class TabularPreprocessor:
    """Categorical maps + imputation + standardisation for the tabular columns.

    Parameters
    ----------
    columns:
        Column name -> ``"continuous"`` or ``"categorical"`` (``DataSpec.tabular``).
    """

    def __init__(self, columns: Mapping[str, str]) -> None:
        self.columns = dict(columns)

    @property
    def categorical(self) -> list[str]:
        return [c for c, t in self.columns.items() if t == "categorical"]

    @property
    def continuous(self) -> list[str]:
        return [c for c, t in self.columns.items() if t == "continuous"]

    def _check_fitted(self) -> None:
        if not hasattr(self, "categories_"):
            raise NotFittedError("TabularPreprocessor is not fitted yet; call fit(train_df) first")

    def _check_columns(self, df: pd.DataFrame) -> None:
        missing = [c for c in self.columns if c not in df.columns]
        if missing:
            raise DataError(
                f"tabular column(s) {missing} missing from the table; "
                f"the model needs {list(self.columns)}"
            )

    def fit(self, df: pd.DataFrame) -> TabularPreprocessor:
        """Learn category maps, medians, means and scales from training rows."""
        self._check_columns(df)
        self.categories_: dict[str, list[str]] = {}
        for col in self.categorical:
            values = df[col].dropna().astype(str)
            self.categories_[col] = sorted(values.unique().tolist())
        self.medians_: dict[str, float] = {}
        self.means_: dict[str, float] = {}
        self.scales_: dict[str, float] = {}
        self.indicators_: list[str] = []
        for col in self.continuous:
            x = pd.to_numeric(df[col], errors="coerce").astype(float)
            observed = x[np.isfinite(x)]
            median = float(observed.median()) if len(observed) else 0.0
            filled = x.where(np.isfinite(x), median)
            with np.errstate(over="ignore", invalid="ignore"):  # 1e308-sized values
                std = float(filled.std(ddof=0)) if len(filled) else 0.0
            self.medians_[col] = median
            self.means_[col] = float(filled.mean()) if len(filled) else 0.0
            self.scales_[col] = std if 1e-12 < std < np.inf else 1.0
            if bool((~np.isfinite(x)).any()):
                self.indicators_.append(col)
        return self

    @property
    def cardinalities(self) -> list[int]:
        """Number of codes per categorical column (categories + the unknown bucket)."""
        self._check_fitted()
        return [len(self.categories_[c]) + 1 for c in self.categorical]

    @property
    def continuous_names(self) -> list[str]:
        """Names of the continuous output features (including missing indicators)."""
        self._check_fitted()
        return self.continuous + [f"{c}__missing" for c in self.indicators_]

    def transform(self, df: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """Return ``(codes int64 (n, n_cat), values float32 (n, n_cont_out))``."""
        self._check_fitted()
        self._check_columns(df)
        n = len(df)
        codes = np.zeros((n, len(self.categorical)), dtype=np.int64)
        for j, col in enumerate(self.categorical):
            lookup = {v: i + 1 for i, v in enumerate(self.categories_[col])}
            values = df[col].astype(object).where(df[col].notna(), None)
            codes[:, j] = [lookup.get(str(v), 0) if v is not None else 0 for v in values]
        cont = np.zeros((n, len(self.continuous_names)), dtype=np.float32)
        for j, col in enumerate(self.continuous):
            x = pd.to_numeric(df[col], errors="coerce").astype(float).to_numpy()
            finite = np.isfinite(x)
            x = np.where(finite, x, self.medians_[col])
            with np.errstate(over="ignore", invalid="ignore"):
                z = (x - self.means_[col]) / self.scales_[col]
            # absurd inputs (1e300) stay finite in float32: never inf / NaN in the network
            cont[:, j] = np.clip(np.nan_to_num(z, nan=0.0), -MAX_ABS_Z, MAX_ABS_Z)
            if col in self.indicators_:
                k = len(self.continuous) + self.indicators_.index(col)
                cont[:, k] = (~finite).astype(np.float32)
        return codes, cont

    def to_dict(self) -> dict[str, Any]:
        self._check_fitted()
        return {
            "columns": self.columns,
            "categories": self.categories_,
            "medians": self.medians_,
            "means": self.means_,
            "scales": self.scales_,
            "indicators": self.indicators_,
        }

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> TabularPreprocessor:
        obj = cls(state["columns"])
        obj.categories_ = {k: list(v) for k, v in state["categories"].items()}
        obj.medians_ = {k: float(v) for k, v in state["medians"].items()}
        obj.means_ = {k: float(v) for k, v in state["means"].items()}
        obj.scales_ = {k: float(v) for k, v in state["scales"].items()}
        obj.indicators_ = list(state["indicators"])
        return obj
