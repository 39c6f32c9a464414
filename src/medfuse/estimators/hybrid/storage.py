"""Saving and loading a hybrid model without pickle.

sklearn steps go through skops (loading trusts only scikit-learn / imblearn / numpy / scipy
classes), XGBoost as its JSON model, the frozen extractor's weights and word vectors as
safetensors, everything else JSON; every file is checked against ``manifest.json`` first.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any

from medfuse.config import DataSpec
from medfuse.data.preprocess import Preprocessor
from medfuse.estimators.base import PREPROCESS_FILE
from medfuse.estimators.fused import FusionClassifier
from medfuse.io import RunDirError, atomic_path, atomic_write_json, verify_manifest, write_manifest

HYBRID_FILE, HEAD_SKOPS, HEAD_XGB = "estimator.json", "head.skops", "head.xgb.json"
TEXT_SKOPS, VECTORS_FILE, EXTRACTOR_DIR = "text.skops", "features.safetensors", "extractor"
IMAGE_FILE = "image.safetensors"
_SAFE_PREFIXES = ("sklearn.", "numpy.", "scipy.", "imblearn.")


def save_hybrid(clf: Any, run: Path) -> Path:
    """Write a fitted :class:`~medfuse.estimators.hybrid.HybridClassifier` into ``run``."""
    import skops.io as sio
    from safetensors.numpy import save_file

    run.mkdir(parents=True, exist_ok=True)
    files = [PREPROCESS_FILE, HYBRID_FILE]
    clf.pre_.save(run / PREPROCESS_FILE)
    if clf.head == "xgboost":
        with atomic_path(run / HEAD_XGB) as tmp:
            clf.head_[-1].save_model(str(tmp))
        files.append(HEAD_XGB)
        if len(clf.head_) > 1:
            with atomic_path(run / HEAD_SKOPS) as tmp:
                sio.dump(clf.head_[:-1], tmp)
            files.append(HEAD_SKOPS)
    else:
        with atomic_path(run / HEAD_SKOPS) as tmp:
            sio.dump(clf.head_, tmp)
        files.append(HEAD_SKOPS)
    if clf.text_model_ is not None:
        with atomic_path(run / TEXT_SKOPS) as tmp:
            sio.dump(clf.text_model_, tmp)
        files.append(TEXT_SKOPS)
    if clf.word_vectors_ is not None:
        with atomic_path(run / VECTORS_FILE) as tmp:
            save_file({"word_vectors": clf.word_vectors_}, str(tmp))
        files.append(VECTORS_FILE)
    if clf.extractor_model_ is None and clf.image_encoder_ is not None:
        # the frozen extractor's weights travel with the model (random-init or builtin)
        from safetensors.torch import save_model

        with atomic_path(run / IMAGE_FILE) as tmp:
            save_model(clf.image_encoder_, str(tmp))
        files.append(IMAGE_FILE)
    if clf.extractor_model_ is not None:
        sub = clf.extractor_model_.save(run / EXTRACTOR_DIR)
        files += [f"{EXTRACTOR_DIR}/{p.name}" for p in sub.iterdir() if p.is_file()]
    meta = {
        "estimator": type(clf).__name__,
        "params": clf.get_params(),
        "spec": clf.spec.model_dump(mode="json"),
        "classes": clf.classes_,
        "head_classes": ([] if clf.multilabel else [int(c) for c in clf.head_.classes_]),
        "fit_seconds": clf.fit_seconds_,
        "decision": clf.decision_state(),
    }
    atomic_write_json(run / HYBRID_FILE, meta)
    write_manifest(run, files)
    return run


def load_hybrid(cls: Any, run: Path) -> Any:
    """Read back into a new ``cls`` instance (a HybridClassifier) what :func:`save_hybrid` wrote."""
    from safetensors.numpy import load_file

    verify_manifest(run, required=(PREPROCESS_FILE, HYBRID_FILE))
    meta = json.loads((run / HYBRID_FILE).read_text())
    clf = cls(DataSpec.model_validate(meta["spec"]), **meta["params"])
    clf.pre_ = Preprocessor.load(run / PREPROCESS_FILE)
    clf.classes_ = list(meta["classes"])
    clf.fit_seconds_ = float(meta["fit_seconds"])
    clf.set_decision_state(meta.get("decision", {}))
    clf.image_encoder_, clf.extractor_model_, clf._memo = None, None, {}
    if clf.extractor == "trained":
        clf.extractor_model_ = FusionClassifier.load(run / EXTRACTOR_DIR)
    elif clf.spec.image:
        from safetensors.torch import load_model

        from medfuse.encoders.image import ImageEncoder

        enc = ImageEncoder(clf.backbone_, "none", clf.image_size, freeze=True,
                           pool=clf.image_pool, views=clf.image_views)
        load_model(enc, str(run / IMAGE_FILE), strict=True)
        clf.image_encoder_ = enc
    clf.text_model_ = _load_skops(run / TEXT_SKOPS) if (run / TEXT_SKOPS).is_file() else None
    clf.word_vectors_ = (load_file(str(run / VECTORS_FILE))["word_vectors"]
                         if (run / VECTORS_FILE).is_file() else None)
    steps = _load_skops(run / HEAD_SKOPS) if (run / HEAD_SKOPS).is_file() else None
    if clf.head == "xgboost":
        from sklearn.pipeline import Pipeline
        from xgboost import XGBClassifier

        booster = XGBClassifier()
        booster.load_model(str(run / HEAD_XGB))
        pre_steps = list(steps.steps) if steps is not None else []
        clf.head_ = Pipeline([*pre_steps, ("head", booster)])
    else:
        clf.head_ = steps
    return clf


def _trusted_type(name: str) -> bool:
    """A class (never a function: it could be called on the inputs) of sklearn / imblearn /
    numpy / scipy.

    >>> _trusted_type("sklearn.tree._tree.Tree"), _trusted_type("builtins.eval")
    (True, False)
    >>> _trusted_type("numpy.load"), _trusted_type("sklearn.no.such.Thing")
    (False, False)
    """
    if not name.startswith(_SAFE_PREFIXES):
        return False
    module, _, attr = name.rpartition(".")
    try:
        obj = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError, ValueError):
        return False
    return isinstance(obj, type)


def _load_skops(path: Path) -> Any:
    """Load a skops file trusting only scikit-learn / imblearn / numpy / scipy classes."""
    import skops.io as sio

    untrusted = sio.get_untrusted_types(file=path)
    foreign = [t for t in untrusted if not _trusted_type(t)]
    if foreign:
        raise RunDirError(
            f"{path}: refusing to load types outside scikit-learn / numpy / scipy classes: "
            f"{', '.join(sorted(foreign))}. Re-create the model with medfuse."
        )
    return sio.load(path, trusted=untrusted)
