"""Bad input, case by case: every case gives a specific message or follows a documented policy.

Each error case asserts the message names the culprit (file / row / column / parameter /
field) and says how to fix it. Policies (README, "Other bad input"):

images (a table read from a file; problem kind ``bad_image``, policy ``error`` by default,
``data.policy.bad_image=drop`` drops and counts the rows)
  truncated PNG / JPEG      -> "cut off before the end of its image data"
  zero-byte file            -> "the file is empty (0 bytes)" + "copy or export the image again"
  text file named .jpg      -> "not a PNG, JPEG, TIFF, BMP or DICOM image (it starts with b'...')"
  malformed DICOM           -> "not a valid DICOM file" / "DICOM file has no pixel data"
  decompression bomb        -> ImageDecodeError / bad_image: "N pixels, more than the pixel
                               limit of M"; no config key, raise PIL.Image.MAX_IMAGE_PIXELS
                               (serve: --max-pixels)
  absolute path elsewhere,  -> always an error (``outside_path``) naming row and column, unless
  '..' out of the folder       data.allow_outside_paths (predict/evaluate/explain:
                               --allow-outside-paths); never stat-ed or read
  same image in two rows    -> kept, counted (``duplicate_image_rows``), always split together
tables
  inf / 'forty' in a number -> error naming row + column, or data.policy.*=drop|keep
  NaN in a number           -> kept, counted (``kept_with_problems``), imputed
  non-UTF-8 table           -> error naming the line + byte, with an iconv hint
  zero-byte / header only   -> "is empty (0 bytes)" / "has a header ... but no data rows"
  missing target / image column -> "column 'x' (data.target) is not in the table. Did you mean"
  single-class training set -> "target has 1 class(es) ['benign'] ('benign': 25 row(s) of 25)"
  three classes             -> accepted (multi-class is supported)
  unseen label at evaluate  -> "label(s) [...] not seen in training; known classes" + did you mean
  unseen category (predict) -> mapped to the unknown code 0 (the API adds a warning)
  very long text            -> cut to model.max_tokens tokens
  predict without a model column -> "column 'age' (data.tabular) is not in the table"
configs
  not YAML / not UTF-8 / a folder / missing file -> ConfigError naming the file and the fix
  wrong types, unknown keys (did you mean, also across sections), batch_size 0, lr <= 0
run directories
  missing file / altered file / corrupt manifest.json -> RunDirError naming the file
HTTP (serve app)
  oversized body 413, wrong content type 415, undecodable / empty / bomb image 422,
  non-finite number 422, invalid JSON 422, unseen category 200 + warning
CLI
  config / table / run-directory errors: exit code 2, message on stderr, no traceback
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from medfuse.config import DataPolicy, DataSpec, load_config
from medfuse.data import load_table, read_image, validate_table
from medfuse.data.validation import ValidationReport
from medfuse.errors import ConfigError, DataError, DataValidationError, ImageDecodeError
from medfuse.io import RunDirError

SPEC: dict[str, Any] = dict(
    image="image", tabular={"age": "continuous", "sex": "categorical"}, text="note",
    target="label", group="patient", positive="malignant")
FAST: dict[str, Any] = dict(
    image_backbone="small_cnn", pretrained="none", image_size=32, max_epochs=1, batch_size=8,
    min_token_freq=1, embed_dim=16, hidden_dims=(16,), progress=False)


def png_bytes(size: tuple[int, int] = (32, 32), mode: str = "RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size).save(buf, format="PNG")
    return buf.getvalue()


def noisy(fmt: str) -> bytes:
    """A 64 x 64 noise image (so cutting it in half cuts its pixel data)."""
    buf = io.BytesIO()
    pixels = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(buf, format=fmt)
    return buf.getvalue()


@pytest.fixture()
def data(tiny_dir: Path, tmp_path: Path) -> Path:
    """A writable copy of the tiny dataset (data.csv + img/), per test."""
    root = tmp_path / "data"
    shutil.copytree(tiny_dir, root, ignore=shutil.ignore_patterns("*.parquet", "unlabeled.csv"))
    return root


def edit(root: Path, change: Callable[[pd.DataFrame], pd.DataFrame]) -> Path:
    """Rewrite root/data.csv through ``change`` and return its path."""
    change(pd.read_csv(root / "data.csv")).to_csv(root / "data.csv", index=False)
    return root / "data.csv"


def set_images(root: Path, paths: dict[int, str]) -> Path:
    """Put ``paths`` (row -> value) in the image column of root/data.csv."""
    def change(df: pd.DataFrame) -> pd.DataFrame:
        for row, value in paths.items():
            df.loc[row, "image"] = value
        return df
    return edit(root, change)


def with_image(root: Path, name: str, content: bytes, row: int = 3) -> Path:
    (root / "img" / name).write_bytes(content)
    return set_images(root, {row: f"img/{name}"})


def load(path: Path, **spec: Any) -> tuple[pd.DataFrame, ValidationReport]:
    return load_table(path, DataSpec(**{**SPEC, **spec}))


# ------------------------------------------------------------------- error cases
@dataclass
class Case:
    """``act(data_root, tmp_path)`` must raise ``error`` whose message holds ``fragments``."""

    id: str
    act: Callable[[Path, Path], object]
    error: type[Exception]
    fragments: tuple[str, ...]
    max_image_pixels: int | None = None  # Pillow's bomb guard for the case (refuses > 2 x)


def _bomb(root: Path, tmp: Path) -> object:
    Image.new("L", (100, 100)).save(root / "img" / "bomb.png")  # 10k pixels > 2 x 1000
    return read_image(root / "img" / "bomb.png")


def _bomb_in_table(root: Path, tmp: Path) -> object:
    Image.new("L", (100, 100)).save(root / "img" / "bomb.png")
    return load(set_images(root, {5: "img/bomb.png"}))


def _outside_absolute(root: Path, tmp: Path) -> object:
    secret = tmp / "secret.png"
    secret.write_bytes(png_bytes())
    return load(set_images(root, {1: str(secret)}))


def _outside_dotdot(root: Path, tmp: Path) -> object:
    (tmp / "secret.png").write_bytes(png_bytes())
    return load(set_images(root, {2: "img/../../secret.png"}))


def _numbers(value: float | str) -> Callable[[Path, Path], object]:
    def act(root: Path, tmp: Path) -> object:
        def change(df: pd.DataFrame) -> pd.DataFrame:
            df["age"] = df["age"].astype(object)
            df.loc[4, "age"] = value
            return df
        return load(edit(root, change))
    return act


def _raw_table(content: bytes) -> Callable[[Path, Path], object]:
    def act(root: Path, tmp: Path) -> object:
        (root / "raw.csv").write_bytes(content)
        return load(root / "raw.csv")
    return act


def _config(text: str | bytes, name: str = "c.yaml") -> Callable[[Path, Path], object]:
    def act(root: Path, tmp: Path) -> object:
        path = tmp / name
        if isinstance(text, bytes):
            path.write_bytes(text)
        else:
            path.write_text(f"data: {{table: {root / 'data.csv'}, image: image, "
                            f"target: label}}\n{text}")
        return load_config(path)
    return act


def _fusion(**params: Any) -> Callable[[Path, Path], object]:
    def act(root: Path, tmp: Path) -> object:
        from medfuse.estimators import FusionClassifier

        df = pd.read_csv(root / "data.csv")
        return FusionClassifier(DataSpec(**SPEC), **{**FAST, **params}).fit(df)
    return act


def _folder_config(root: Path, tmp: Path) -> object:
    (tmp / "cfg.yaml").mkdir()
    return load_config(tmp / "cfg.yaml")


CASES = [
    # ---- images
    Case("image-truncated-png",
         lambda root, tmp: load(with_image(root, "cut.png", noisy("PNG")[:6000])),
         DataValidationError, ("row 3", "column 'image'", "cut.png' cannot be decoded",
                               "cut off before the end of its image data",
                               "data.policy.bad_image=drop")),
    Case("image-truncated-jpeg",
         lambda root, tmp: load(with_image(root, "cut.jpg", noisy("JPEG")[:900])),
         DataValidationError, ("row 3", "cut.jpg' cannot be decoded",
                               "cut off before the end of its image data")),
    Case("image-zero-bytes", lambda root, tmp: load(with_image(root, "empty.png", b"")),
         DataValidationError, ("row 3", "column 'image'", "the file is empty (0 bytes)",
                               "Copy or export the image again")),
    Case("image-text-named-jpg",
         lambda root, tmp: load(with_image(root, "notes.jpg", b"patient notes, not pixels")),
         DataValidationError, ("notes.jpg' cannot be decoded", "not a PNG, JPEG, TIFF, BMP or "
                               "DICOM image", "starts with b'patient notes")),
    Case("image-malformed-dicom",
         lambda root, tmp: load(with_image(root, "bad.dcm", b"garbage" * 40)),
         DataValidationError, ("bad.dcm' cannot be decoded", "not a valid DICOM file")),
    Case("image-dicom-without-pixels",
         lambda root, tmp: load(with_image(root, "nopix.dcm", b"\0" * 128 + b"DICM" + b"x" * 64)),
         DataValidationError, ("nopix.dcm' cannot be decoded", "no pixel data")),
    Case("image-decompression-bomb", _bomb, ImageDecodeError,
         ("bomb.png", "10000 pixels, more than the pixel limit of 2000",
          "PIL.Image.MAX_IMAGE_PIXELS", "config has no key", "--max-pixels"), 1000),
    Case("image-decompression-bomb-in-table", _bomb_in_table, DataValidationError,
         ("row 5", "column 'image'", "more than the pixel limit", "downscale it",
          "data.policy.bad_image=drop"), 2000),
    Case("image-absolute-path-outside", _outside_absolute, DataValidationError,
         ("[outside_path]", "row 1", "column 'image'", "secret.png", "outside the data folder",
          "--set data.allow_outside_paths=true")),
    Case("image-dotdot-path-outside", _outside_dotdot, DataValidationError,
         ("[outside_path]", "row 2", "column 'image'", "'img/../../secret.png'",
          "data.allow_outside_paths=true")),
    # ---- tables
    Case("number-infinite", _numbers(np.inf), DataValidationError,
         ("row 4, column 'age': value inf is infinite", "data.policy.infinite_number=drop|keep")),
    Case("number-is-text", _numbers("forty"), DataValidationError,
         ("row 4, column 'age': value 'forty' is not a number",
          "data.policy.bad_number=drop|keep")),
    Case("table-not-utf8", _raw_table("image,age,label\nimg/00.png,1,b\xe9nin\n".encode("latin1")),
         DataError, ("raw.csv' is not UTF-8", "line 2", "b'\\xe9'", "iconv -f latin1")),
    Case("table-zero-bytes", _raw_table(b""), DataError,
         ("raw.csv' is empty (0 bytes)", "header line")),
    Case("table-header-only", _raw_table(b"image,age,sex,note,label,patient\n"), DataError,
         ("raw.csv' has a header (6 column(s)) but no data rows",)),
    Case("table-missing-target-column",
         lambda root, tmp: load(edit(root, lambda df: df.rename(columns={"label": "Label"}))),
         DataValidationError, ("column 'label' (data.target) is not in the table",
                               "Did you mean 'Label'?", "data.csv")),
    Case("table-missing-image-column",
         lambda root, tmp: load(edit(root, lambda df: df.rename(columns={"image": "images"}))),
         DataValidationError, ("column 'image' (data.image) is not in the table",
                               "Did you mean 'images'?")),
    Case("target-single-class",
         lambda root, tmp: load(edit(root, lambda df: df.assign(label="benign"))),
         DataValidationError, ("column 'label'", "1 class(es) ['benign']",
                               "'benign': 25 row(s) of 25", "needs two or more",
                               "Add rows of another class")),
    # ---- configs
    Case("config-not-yaml", _config(b"data: {table: x.csv\ntrain: [\n"), ConfigError,
         ("c.yaml' is not valid YAML", "line")),
    Case("config-not-utf8", _config(b"\xff\xfe\x00data"), ConfigError,
         ("c.yaml' is not UTF-8", "Re-save it as UTF-8")),
    Case("config-file-missing", lambda root, tmp: load_config(tmp / "nope.yaml"), ConfigError,
         ("config file", "nope.yaml' does not exist", "current directory")),
    Case("config-is-a-folder", _folder_config, ConfigError, ("cfg.yaml' is a folder",)),
    Case("config-wrong-type", _config("train: {max_epochs: ten}\n"), ConfigError,
         ("'train.max_epochs'", "valid integer", "Got 'ten'")),
    Case("config-list-for-mapping", _config("model: [small_cnn]\n"), ConfigError,
         ("'model' must be a mapping of 'key: value' entries", "Got ['small_cnn']")),
    Case("config-unknown-key", _config("model: {fusoin: gated}\n"), ConfigError,
         ("unknown key 'model.fusoin'", "Did you mean 'fusion'?")),
    Case("config-key-in-wrong-section", _config("train: {calibrate: false}\n"), ConfigError,
         ("unknown key 'train.calibrate'", "Did you mean 'evaluation.calibrate'?")),
    Case("config-batch-size-zero", _config("train: {batch_size: 0}\n"), ConfigError,
         ("'train.batch_size'", "greater than or equal to 1", "Got 0")),
    Case("config-negative-lr", _config("train: {lr: -0.01}\n"), ConfigError,
         ("'train.lr'", "greater than 0", "Got -0.01")),
    Case("estimator-batch-size-zero", _fusion(batch_size=0), ConfigError,
         ("'batch_size' parameter of FusionClassifier", "int >= 1", "Got 0")),
    Case("estimator-lr-zero", _fusion(lr=0.0), ConfigError,
         ("'lr' parameter of FusionClassifier", "finite number > 0", "Got 0.0")),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_gives_a_specific_message(case: Case, data: Path, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    if case.max_image_pixels is not None:
        monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", case.max_image_pixels)
    with pytest.raises(case.error) as err:
        case.act(data, tmp_path)
    msg = str(err.value)
    for fragment in case.fragments:
        assert fragment in msg, f"{fragment!r} not in:\n{msg}"


# ------------------------------------------------------------------- policies
def test_bad_image_drop_policy_counts_the_rows(data: Path) -> None:
    (data / "img" / "empty.png").write_bytes(b"")
    (data / "img" / "notes.jpg").write_text("not pixels")
    path = set_images(data, {3: "img/empty.png", 4: "img/notes.jpg"})
    clean, report = load(path, policy=DataPolicy(bad_image="drop"))
    assert len(clean) == 23 and report.dropped == {"bad_image": 2}
    assert report.to_dict()["rows_dropped"] == 2 and "dropped: bad_image=2" in report.summary()


def test_outside_paths_allowed_when_asked(data: Path, tmp_path: Path) -> None:
    secret = tmp_path / "elsewhere.png"
    secret.write_bytes(png_bytes())
    path = set_images(data, {1: str(secret)})
    clean, _ = load(path, allow_outside_paths=True)
    assert clean.loc[1, "image"] == str(secret)
    # in the folder: absolute paths, '..' that stays inside and symbolic links are fine
    (data / "link.png").symlink_to(secret)
    path = set_images(data, {0: str(data / "img" / "01.png"), 1: "img/../img/02.png",
                             2: "link.png"})
    assert len(load(path)[0]) == 25
    # an in-memory table has no data folder: nothing to escape (the API's own choice)
    df = pd.read_csv(data / "data.csv").assign(image=lambda d: [str(data / p) for p in d.image])
    df.loc[1, "image"] = str(secret)
    assert len(validate_table(df, DataSpec(**SPEC))[0]) == 25


def test_outside_paths_are_never_opened(data: Path) -> None:
    """The refusal comes before any stat / decode: a missing file outside is 'outside'."""
    path = set_images(data, {0: "/no/such.png"})
    with pytest.raises(DataValidationError) as err:
        load(path, policy=DataPolicy(missing_image="drop"))
    assert "[outside_path]" in str(err.value) and "does not exist" not in str(err.value)


def test_nan_in_numbers_is_kept_and_counted(data: Path) -> None:
    path = edit(data, lambda df: df.assign(age=df["age"].where(~df.index.isin([2, 7]))))
    clean, report = load(path)
    assert len(clean) == 25 and report.kept == {"missing_number": 2}
    assert clean["age"].isna().sum() == 2  # imputed later by the fitted median
    with pytest.raises(DataValidationError, match=r"row 2, column 'age': value is missing"):
        load(path, policy=DataPolicy(missing_number="error"))


def test_duplicate_images_are_kept_counted_and_split_together(data: Path) -> None:
    from medfuse.config import SplitSpec
    from medfuse.data import group_labels

    path = set_images(data, {5: "img/00.jpg", 9: "./img/00.jpg"})
    spec = DataSpec(**{**SPEC, "group": None}, split=SplitSpec(dedupe_images=False))
    clean, report = load_table(path, spec)
    assert len(clean) == 25 and report.duplicate_image_rows == 2
    assert report.to_dict()["duplicate_image_rows"] == 2
    assert "repeating an earlier row's image: 2" in report.summary()
    groups, split = group_labels(clean, spec)
    assert groups[0] == groups[5] == groups[9] and split.n_groups == 23


def test_three_classes_are_accepted(data: Path) -> None:
    path = edit(data, lambda df: df.assign(label=["a", "b", "c"] * 8 + ["a"]))
    clean, _ = load(path, positive=None)
    assert sorted(clean["label"].unique()) == ["a", "b", "c"]


def test_very_long_text_is_cut_to_max_tokens(data: Path) -> None:
    from medfuse.data import Preprocessor

    df, _ = load(data / "data.csv")
    pre = Preprocessor(DataSpec(**SPEC), max_tokens=8, min_token_freq=1).fit(df)
    long = "lesion has grown " * 20_000  # 60k tokens
    ids = pre.encode_text(pd.Series([long, "stable"]))
    assert ids.shape == (2, 8)
    assert (ids[0] > 0).all() and (ids[1, 1:] == 0).all()  # cut, vs padded


# ------------------------------------------------------- a trained model (cheap)
@pytest.fixture(scope="module")
def run(tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from medfuse.estimators import FusionClassifier

    spec = DataSpec(**SPEC)
    df, _ = load_table(tiny_dir / "data.csv", spec)
    return FusionClassifier(spec, **FAST).fit(df).save(tmp_path_factory.mktemp("runs") / "tiny")


def test_unseen_category_maps_to_the_unknown_code(run: Path, tiny_dir: Path) -> None:
    from medfuse.runs import load_model

    clf = load_model(run)
    df, _ = load_table(tiny_dir / "data.csv", DataSpec(**SPEC))
    df = df.head(3).assign(sex=["female", "intersex", "?"])
    codes, _ = clf.pre_.tabular_.transform(df)
    assert codes[:, 0].tolist()[1:] == [0, 0] and codes[0, 0] > 0
    proba = clf.predict_proba(df.drop(columns="label"))
    assert proba.shape == (3, 2) and np.isfinite(proba).all()


def test_unseen_label_at_evaluation(run: Path, tiny_dir: Path) -> None:
    from medfuse.runs import evaluate, load_model

    df, _ = load_table(tiny_dir / "data.csv", DataSpec(**SPEC))
    df.loc[[0, 1], "label"] = ["maybe", "malignent"]
    with pytest.raises(DataError) as err:
        evaluate(load_model(run), df)
    msg = str(err.value)
    assert "target column 'label' has label(s) ['malignent', 'maybe'] not seen in training" \
        in msg and "'maybe': 1 row(s)" in msg and "known classes: ['benign', 'malignant']" in msg
    assert "Did you mean 'malignant'?" in msg and "Fix or drop those rows" in msg


def test_predict_on_a_table_missing_a_model_column(run: Path, data: Path, tmp_path: Path
                                                   ) -> None:
    from medfuse.runs import predict_run

    path = edit(data, lambda df: df.drop(columns=["age", "label"]))
    with pytest.raises(DataValidationError) as err:
        predict_run(run, path, tmp_path / "p.csv")
    msg = str(err.value)
    assert "column 'age' (data.tabular) is not in the table" in msg and "Columns present" in msg
    assert not (tmp_path / "p.csv").exists()


def test_predict_outside_paths_only_when_allowed(run: Path, data: Path, tmp_path: Path
                                                 ) -> None:
    from medfuse.runs import predict_run

    outside = tmp_path / "other"
    shutil.copytree(data / "img", outside)
    path = edit(data, lambda df: df.assign(image=[str(outside / Path(p).name)
                                                  for p in df["image"]]))
    with pytest.raises(DataValidationError, match="--allow-outside-paths"):
        predict_run(run, path, tmp_path / "p.csv")
    preds = predict_run(run, path, tmp_path / "p.csv", allow_outside_paths=True)
    assert len(preds) == 25


@pytest.mark.parametrize("damage, fragments", [
    ("missing", ("lacks ['preprocess.json']", "retrain or restore")),
    ("altered", ("['model.safetensors']", "do not match their sha256", "Restore the originals")),
    ("manifest", ("manifest.json' is not a valid manifest", "Restore it or retrain")),
], ids=["rundir-missing-file", "rundir-altered-file", "rundir-corrupt-manifest"])
def test_damaged_run_directory(run: Path, tmp_path: Path, damage: str,
                               fragments: tuple[str, ...]) -> None:
    from medfuse.runs import load_model

    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    if damage == "missing":
        (copy / "preprocess.json").unlink()
    elif damage == "altered":
        blob = bytearray((copy / "model.safetensors").read_bytes())
        blob[-1] ^= 0xFF
        (copy / "model.safetensors").write_bytes(bytes(blob))
    else:
        (copy / "manifest.json").write_text('{"files": {"model.safetensors": ')
    with pytest.raises(RunDirError) as err:
        load_model(copy)
    for fragment in fragments:
        assert fragment in str(err.value)


# ------------------------------------------------------------------------- HTTP
@pytest.fixture(scope="module")
def client(run: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from medfuse.serve import create_app

    before = Image.MAX_IMAGE_PIXELS  # create_app sets Pillow's global limit
    app = create_app(run, audit_db=tmp_path_factory.mktemp("audit") / "a.sqlite",
                     max_upload_mb=0.05, max_pixels=1_000_000)
    with TestClient(app) as c:
        yield c
    Image.MAX_IMAGE_PIXELS = before


FORM = {"age": "40", "sex": "female", "text": "lesion has grown"}


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")  # 1x-2x: a warning
@pytest.mark.parametrize("request_kw, status, field, fragments", [
    (dict(files={"image": ("n.png", os.urandom(80_000), "image/png")}, data=FORM), 413, "body",
     ("exceeds the 52428 byte limit", "--max-upload-mb")),
    (dict(content=b"age=40", headers={"content-type": "text/plain"}), 415, "content-type",
     ("unsupported content type 'text/plain'", "multipart/form-data or application/json")),
    (dict(files={"image": ("a.png", b"plain text", "image/png")}, data=FORM), 422, "image",
     ("cannot decode the image", "PNG")),
    (dict(files={"image": ("a.png", b"", "image/png")}, data=FORM), 422, "image",
     ("the uploaded image is empty (0 bytes)",)),
    (dict(files={"image": ("b.png", png_bytes((1100, 1000), "L"), "image/png")}, data=FORM),
     422, "image", ("1100000 pixels, more than the 1000000 allowed", "--max-pixels")),
    (dict(json={"image_base64": "", "tabular": {"age": "inf", "sex": "male"}, "text": "x"}),
     422, "age", ("field 'age' must be a finite number",)),
    (dict(content=b'{"tabular": {"age": 4', headers={"content-type": "application/json"}),
     422, "body", ("invalid JSON",)),
], ids=["http-oversized-413", "http-wrong-content-type-415", "http-not-an-image-422",
        "http-empty-image-422", "http-decompression-bomb-422", "http-infinite-number-422",
        "http-invalid-json-422"])
def test_http_bad_input(client: Any, request_kw: dict[str, Any], status: int, field: str,
                        fragments: tuple[str, ...]) -> None:
    res = client.post("/api/predict", **request_kw)
    assert res.status_code == status, res.text
    detail = res.json()["detail"]
    problem = next(d for d in detail if d["field"] == field)
    for fragment in fragments:
        assert fragment in problem["msg"], problem["msg"]
    assert "medfuse-serve" not in res.text and "Traceback" not in res.text


def test_http_unseen_category_is_a_warning(client: Any) -> None:
    res = client.post("/api/predict", files={"image": ("a.png", png_bytes(), "image/png")},
                      data={**FORM, "sex": "intersex"})
    assert res.status_code == 200, res.text
    warning = " ".join(res.json()["warnings"])
    assert "'sex': value 'intersex' was not seen in training" in warning
    assert "<unknown>" in warning


# -------------------------------------------------------------------------- CLI
def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "medfuse", *args], capture_output=True,
                          text=True, cwd=cwd, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200"})


def _cli_outside(data: Path, tmp: Path, run: Path) -> list[str]:
    set_images(data, {0: "/etc/hosts"})
    cfg = tmp / "c.yaml"
    cfg.write_text(f"data: {{table: {data / 'data.csv'}, image: image, target: label}}\n")
    return ["validate", str(cfg)]


def _cli_latin1(data: Path, tmp: Path, run: Path) -> list[str]:
    (data / "data.csv").write_bytes("image,label\nimg/00.png,b\xe9nin\n".encode("cp1252"))
    return ["validate", "synth_derm", "--set", f"data.table={data / 'data.csv'}",
            "--set", "data.dataset=null"]


def _cli_altered_run(data: Path, tmp: Path, run: Path) -> list[str]:
    copy = tmp / "run"
    shutil.copytree(run, copy)
    (copy / "preprocess.json").write_text((copy / "preprocess.json").read_text() + " ")
    return ["predict", str(copy), "--data", str(data / "data.csv"), "--out", str(tmp / "p.csv")]


CLI_CASES = [
    ("cli-config-file-missing", lambda data, tmp, run: ["validate", str(tmp / "no.yaml")],
     ("no.yaml' does not exist",)),
    ("cli-image-path-outside", _cli_outside, ("[outside_path]", "row 0", "column 'image'",
                                              "data.allow_outside_paths=true")),
    ("cli-table-not-utf8", _cli_latin1, ("is not UTF-8", "line 2", "iconv")),
    ("cli-run-file-altered", _cli_altered_run, ("['preprocess.json']", "sha256")),
]


@pytest.mark.parametrize("make, fragments", [c[1:] for c in CLI_CASES],
                         ids=[c[0] for c in CLI_CASES])
def test_cli_bad_input_is_one_clean_message(make: Callable[[Path, Path, Path], list[str]],
                                            fragments: tuple[str, ...], data: Path,
                                            tmp_path: Path, run: Path) -> None:
    res = cli(*make(data, tmp_path, run))
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr and "error:" in res.stderr
    flat = " ".join(res.stderr.split())  # rich may wrap long lines
    for fragment in fragments:
        assert fragment in flat, f"{fragment!r} not in:\n{res.stderr}"


def test_cli_os_errors_are_clean(data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """An operating-system error on a path the user gave (here: --out under a file) is one
    line on stderr and exit code 2, like medfuse's own errors (in process: no 6 s start-up)."""
    from medfuse.cli import main

    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"data: {{table: {data / 'data.csv'}, text: note, target: label}}\n")
    (tmp_path / "file").write_text("x")
    monkeypatch.setattr(sys, "argv", ["medfuse", "validate", str(cfg), "--out",
                                      str(tmp_path / "file" / "findings.json")])
    with pytest.raises(SystemExit) as exit_:
        main()
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "Traceback" not in err
    assert "error:" in err and "file" in err
