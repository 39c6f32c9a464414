"""Tiny synthetic fixture datasets built on the fly (a few rows, a few KB of images)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from medfuse.config import DataSpec

# Third-party caches the tests may fill (matplotlib's font cache, Hugging Face, torch hub):
# a session folder, never the user's ~/.cache.
_THIRD_PARTY_CACHES = ("XDG_CACHE_HOME", "MPLCONFIGDIR", "HF_HOME", "TORCH_HOME")


def pytest_configure(config: pytest.Config) -> None:
    """Everything the tests write outside ``tmp_path`` goes to a temporary folder.

    ``MEDFUSE_HOME`` is set per test by :func:`_isolated` (below); this session folder holds
    the third-party caches and is the ``MEDFUSE_HOME`` of code running outside a test
    (doctests' collection, session fixtures). ``MEDFUSE_TEST_HOME`` names a folder to keep
    between runs instead (it is then shared by every test: for debugging only).
    """
    import os
    import tempfile

    keep = os.environ.get("MEDFUSE_TEST_HOME")
    home = keep or tempfile.mkdtemp(prefix="medfuse-test-home-")
    config._medfuse_tmp_home = None if keep else home  # type: ignore[attr-defined]
    os.environ["MEDFUSE_HOME"] = home
    for name in _THIRD_PARTY_CACHES:
        os.environ[name] = os.path.join(home, "third-party", name.lower())


def pytest_unconfigure(config: pytest.Config) -> None:
    import shutil

    home = getattr(config, "_medfuse_tmp_home", None)
    if home:
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(autouse=True)
def _isolated(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch,
              tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Each test starts alike, whatever ran before it and in whatever order.

    * Python's, NumPy's and torch's global random generators are seeded (0);
    * ``MEDFUSE_HOME`` (generated datasets, feature / pixel / hash / ONNX caches) is a fresh
      empty folder, so no test relies on a cache another test filled; subprocesses
      (CLI tests) inherit it;
    * Pillow's process-wide decompression-bomb limit (``PIL.Image.MAX_IMAGE_PIXELS``, which
      ``create_app(max_pixels=...)`` sets as the service's limit) is restored after a test
      that builds a service; module-scoped services restore it in their own teardown (a
      serve module's small limit once broke a later test reading a big screenshot).
    """
    import os
    import random

    import torch

    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", Image.MAX_IMAGE_PIXELS)  # restored after
    if not os.environ.get("MEDFUSE_TEST_HOME"):
        monkeypatch.setenv("MEDFUSE_HOME", str(tmp_path_factory.mktemp("medfuse-home")))
    yield


@pytest.fixture()
def add_callbacks(monkeypatch: pytest.MonkeyPatch) -> Any:
    """``add_callbacks(cb, ...)``: every Trainer medfuse builds in this test also runs them."""
    import medfuse.training as training

    original = training.make_trainer

    def add(*extra: Any) -> None:
        def spying(*args: Any, **kw: Any) -> Any:
            return original(*args, **{**kw, "callbacks": [*kw.get("callbacks", []), *extra]})

        monkeypatch.setattr(training, "make_trainer", spying)

    return add


def write_dicom(path: Path, pixels: np.ndarray, photometric: str = "MONOCHROME2") -> Path:
    """A minimal valid DICOM file holding a 16-bit grayscale image."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "OT"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.PixelData = pixels.astype(np.uint16).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def moved_copies(df: pd.DataFrame, out: Path, moves: list[Image.Transpose]) -> pd.DataFrame:
    """``df`` with each image replaced by a flipped / turned PNG copy in ``out``.

    ``moves`` are cycled over the rows (one move: the same one for every image).
    """
    out.mkdir(exist_ok=True)
    paths = []
    for i, path in enumerate(df["image"]):
        target = out / f"{i}.png"
        Image.open(path).transpose(moves[i % len(moves)]).save(target)
        paths.append(str(target))
    return df.assign(image=paths)


@pytest.fixture(scope="session")
def image_mover() -> Any:
    """The :func:`moved_copies` helper, for tests of flip / rotation invariance."""
    return moved_copies


@pytest.fixture(scope="session")
def dicom_writer() -> object:
    """The :func:`write_dicom` helper, for tests that make their own DICOM files."""
    return write_dicom


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with data.csv (image + tabular + text) and its images (PNG, JPEG, DICOM)."""
    root = tmp_path_factory.mktemp("tiny")
    (root / "img").mkdir()
    rng = np.random.default_rng(0)
    rows = []
    for i in range(24):
        label = i % 2
        coarse = rng.integers(0, 120, size=(4, 4, 3), dtype=np.uint8)  # distinct, smooth images
        arr = np.asarray(Image.fromarray(coarse).resize((32, 32), Image.Resampling.BILINEAR))
        arr = arr.copy()
        if label:  # a small bright patch at a random place
            y0, x0 = rng.integers(2, 24, size=2)
            arr[y0 : y0 + 6, x0 : x0 + 6] = 230
        name = f"img/{i:02d}." + ("jpg" if i % 3 == 0 else "png")
        Image.fromarray(arr).save(root / name)
        rows.append(
            {
                "image": name,
                "age": float(30 + i),
                "sex": "female" if i % 4 < 2 else "male",
                "note": "lesion has grown" if label else "stable since childhood",
                "label": "malignant" if label else "benign",
                "patient": f"p{i // 2}",
            }
        )
    write_dicom(root / "img" / "scan.dcm", (np.arange(32 * 32).reshape(32, 32) % 4096))
    rows.append(
        {"image": "img/scan.dcm", "age": 61.0, "sex": "male", "note": "new scan",
         "label": "malignant", "patient": "p99"}
    )
    pd.DataFrame(rows).to_csv(root / "data.csv", index=False)
    return root


@pytest.fixture()
def tiny_spec() -> DataSpec:
    return DataSpec(
        image="image",
        tabular={"age": "continuous", "sex": "categorical"},
        text="note",
        target="label",
        group="patient",
        positive="malignant",
    )


@pytest.fixture()
def tiny_df(tiny_dir: Path) -> pd.DataFrame:
    return pd.read_csv(tiny_dir / "data.csv")


@pytest.fixture(scope="session")
def tiny_config(tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A YAML config over ``tiny_dir`` with a tiny model (trains in seconds)."""
    cfg = tmp_path_factory.mktemp("cfg") / "tiny.yaml"
    cfg.write_text(f"""
data:
  table: {tiny_dir / 'data.csv'}
  image: image
  tabular: {{age: continuous, sex: categorical}}
  text: note
  target: label
  positive: malignant
  group: patient
model: {{image_backbone: small_cnn, pretrained: none, image_size: 32, hidden_dims: [16],
        min_token_freq: 1, embed_dim: 16}}
train: {{max_epochs: 1, batch_size: 8}}
""")
    return cfg


CHROMIUM = Path("/usr/bin/chromium")  # Debian's package (make test installs it as root)


@pytest.fixture()
def chromium_page() -> Iterator[Any]:
    """A Playwright page in headless Debian Chromium; skips without playwright / chromium."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("needs playwright")
    if not CHROMIUM.exists():
        pytest.skip(f"needs {CHROMIUM} (apt-get install chromium)")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM),
                                    args=["--no-sandbox", "--disable-gpu"])
        try:
            yield browser.new_page()
        finally:
            browser.close()
