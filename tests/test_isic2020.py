"""The shipped ``isic2020`` config on a small generated replica of the SIIM-ISIC 2020 layout."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from medfuse.config import load_config
from medfuse.data import holdout_split, load_data


@pytest.fixture(scope="module")
def isic_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``train.csv`` (the Kaggle columns) + ``jpeg/train/<image_name>.jpg``: 10 patients x 3."""
    root = tmp_path_factory.mktemp("siim-isic")
    (root / "jpeg" / "train").mkdir(parents=True)
    rng = np.random.default_rng(0)
    sites = ["torso", "lower extremity", "upper extremity", "head/neck", None]
    rows = []
    for i in range(30):
        patient = i // 3
        target = int(patient % 3 == 0)  # 4 of the 10 patients have melanoma
        coarse = rng.integers(110, 240, size=(8, 8, 3), dtype=np.uint8)  # distinct images
        skin = np.asarray(Image.fromarray(coarse).resize((32, 32), Image.Resampling.BILINEAR))
        skin = skin.copy()
        r = 4 + 3 * target + int(rng.integers(0, 3))
        cy, cx = rng.integers(10, 22, size=2)
        yy, xx = np.mgrid[:32, :32]
        skin[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = (80, 50, 40)
        skin[:, int(rng.integers(0, 32))] = 30  # a hair
        name = f"ISIC_{1000000 + 7919 * i:07d}"
        Image.fromarray(skin).save(root / "jpeg" / "train" / f"{name}.jpg", quality=90)
        rows.append({
            "image_name": name,
            "patient_id": f"IP_{7000000 + 131 * patient}",
            "sex": None if i == 4 else ("male" if patient % 2 else "female"),
            "age_approx": None if i == 7 else float(30 + 5 * patient),
            "anatom_site_general_challenge": sites[i % 5],
            "diagnosis": "melanoma" if target else "nevus",
            "benign_malignant": "malignant" if target else "benign",
            "target": target,
        })
    pd.DataFrame(rows).to_csv(root / "train.csv", index=False)
    return root


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "medfuse.cli", *args], capture_output=True,
                          text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})


FAST = ["--set", "train.max_epochs=1", "--set", "model.image_size=32",
        "--set", "train.batch_size=8", "--set", "evaluation.bootstrap=20",
        "--set", "data.split.test_size=0.3", "--set", "data.split.valid_size=0.3"]


def test_config_reads_the_layout_and_splits_by_patient(isic_dir: Path) -> None:
    table = ["data.table=" + str(isic_dir / "train.csv")]
    cfg = load_config("isic2020", [*table, "data.split.test_size=0.3",
                                   "data.split.valid_size=0.3"])
    df, report = load_data(cfg.data)
    assert len(df) == 30 and report.rows_out == 30
    first = Path(df["image_name"].iloc[0])
    assert first.is_absolute() and first.parent == isic_dir / "jpeg" / "train"
    assert first.name == "ISIC_1000000.jpg"
    split = holdout_split(df, cfg.data, seed=cfg.train.seed)
    patients = [set(df["patient_id"].iloc[idx]) for idx in split.indices]
    assert all(patients) and sum(len(p) for p in patients) == 10
    assert not (patients[0] & patients[1] or patients[0] & patients[2]
                or patients[1] & patients[2])

    res = cli("validate", "isic2020", "--set", table[0])
    assert res.returncode == 0, res.stderr
    assert "groups: 10" in res.stdout and "0=18" in res.stdout and "1=12" in res.stdout


def test_train_one_epoch_with_the_config(isic_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    res = cli("train", "isic2020", "--out", str(out), "--set",
              f"data.table={isic_dir / 'train.csv'}", "--set", "data.hair_removal=true", *FAST)
    assert res.returncode == 0, res.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["epochs"] == 1 and metrics["split"]["n_groups"] == 10
    preds = pd.read_csv(out / "predictions.csv")
    assert len(preds) == metrics["n"] and {"prob_0", "prob_1", "patient_id"} <= set(preds)
    # the test patients were not trained on: rebuild the split the run used
    cfg = load_config(out / "config.yaml")
    df, _ = load_data(cfg.data)
    split = holdout_split(df, cfg.data, seed=cfg.train.seed)
    trained_on = set(df["patient_id"].iloc[np.r_[split.train, split.valid]])
    assert set(preds["patient_id"].astype(str)) == set(df["patient_id"].iloc[split.test])
    assert not set(preds["patient_id"].astype(str)) & trained_on
    pre = json.loads((out / "preprocess.json").read_text())
    assert pre["image"]["hair_removal"] is True and pre["image"]["size"] == 32
    assert "vflip: 0.5" in (out / "config.yaml").read_text()
