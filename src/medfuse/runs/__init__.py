"""The jobs behind ``medfuse train / cv / ablate / evaluate / predict``, writing run directories.

A training run directory holds ``config.yaml`` (resolved), ``model.safetensors``,
``preprocess.json``, ``estimator.json``, ``metrics.json``, ``predictions.csv``,
``manifest.json`` (sha256 of every file), ``logs/`` and ``checkpoints/``.

* :mod:`~medfuse.runs.train` -- ``train_run`` (holdout train / valid / test);
* :mod:`~medfuse.runs.cv` -- ``cv_run`` (k-fold cross-validation, hybrid heads compared);
* :mod:`~medfuse.runs.folds` -- cross-validation folds kept on disk for ``--resume``;
* :mod:`~medfuse.runs.audit` -- ``audit_run`` (``medfuse audit``: the label audit, rebuilt);
* :mod:`~medfuse.runs.cleaning` -- ``train.label_issues``: fitting around suspect labels;
* :mod:`~medfuse.runs.ablate` -- ``ablate_run`` (single modalities vs the fused model);
* :mod:`~medfuse.runs.inference` -- ``evaluate_run`` and ``predict_run`` on a saved model;
* :mod:`~medfuse.runs.models` -- ``estimator_from_config`` and ``load_model``;
* :mod:`~medfuse.runs.files` -- run-directory file names and writers.

``evaluate``, ``modality_subsets`` and ``predictions_frame`` live in
:mod:`medfuse.evaluation.evaluate` and are re-exported here.
"""

from medfuse.evaluation.evaluate import evaluate, modality_subsets, predictions_frame
from medfuse.runs.ablate import ablate_run, ablation_specs
from medfuse.runs.cv import HEAD_TABLE_KEYS, cv_run
from medfuse.runs.files import FAMILIES_FILE, SUBSETS_FILE, peak_rss_mb
from medfuse.runs.folds import FOLD_FILE, FOLD_PREDICTIONS
from medfuse.runs.inference import evaluate_run, predict_run
from medfuse.runs.models import Estimator, estimator_from_config, load_model
from medfuse.runs.train import train_run

__all__ = [
    "FAMILIES_FILE",
    "FOLD_FILE",
    "FOLD_PREDICTIONS",
    "HEAD_TABLE_KEYS",
    "SUBSETS_FILE",
    "Estimator",
    "ablate_run",
    "ablation_specs",
    "cv_run",
    "estimator_from_config",
    "evaluate",
    "evaluate_run",
    "load_model",
    "modality_subsets",
    "peak_rss_mb",
    "predict_run",
    "predictions_frame",
    "train_run",
]
