"""Decoded-image cache, fast extraction and precision resolution (issue 10)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from medfuse.config import DataSpec
from medfuse.data.dataset import MultimodalDataset
from medfuse.data.decoded import DecodedImages, load_pixels, training_cache
from medfuse.data.images import read_image
from medfuse.data.preprocess import ImageTransform, Preprocessor
from medfuse.perf import native_bf16, resolve_precision, use_bf16


def _paths(tiny_dir: Path) -> list[str]:
    df = pd.read_csv(tiny_dir / "data.csv")
    return [str(tiny_dir / p) for p in df["image"]]


def test_cached_pixels_are_bit_identical_and_decoded_once(tiny_dir: Path, tmp_path: Path) -> None:
    paths = _paths(tiny_dir)  # PNG, JPEG and a DICOM file
    transform = ImageTransform(24)
    cache = DecodedImages(transform, root=tmp_path)
    for p in paths:
        expected = transform(read_image(p))
        assert torch.equal(transform.normalize(cache.pixels(p)), expected)
    assert cache.misses == len(set(paths)) and cache.hits == 0
    again = DecodedImages(transform, root=tmp_path)  # a new process would see the same files
    batch = load_pixels(paths, transform, again)
    assert batch.dtype == torch.uint8 and batch.shape == (len(paths), 3, 24, 24)
    assert again.misses == 0 and again.hits == len(paths)
    assert torch.equal(transform.normalize(batch),
                       torch.stack([transform(read_image(p)) for p in paths]))


def test_key_follows_the_pixels_not_the_normalisation(tmp_path: Path) -> None:
    base = DecodedImages(ImageTransform(24), root=tmp_path).dir
    assert DecodedImages(ImageTransform(24, (0.1, 0.2, 0.3)), root=tmp_path).dir == base
    assert DecodedImages(ImageTransform(32), root=tmp_path).dir != base
    assert DecodedImages(ImageTransform(24, hair_removal=True), root=tmp_path).dir != base


def test_torn_file_is_decoded_again_and_read_only_cache_still_works(
    tiny_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = _paths(tiny_dir)[1]
    transform = ImageTransform(16)
    cache = DecodedImages(transform, root=tmp_path / "c")
    good = cache.pixels(path)
    stored = next((tmp_path / "c").rglob("*.npy"))
    stored.write_bytes(stored.read_bytes()[:40])  # torn write
    assert torch.equal(DecodedImages(transform, root=tmp_path / "c").pixels(path), good)
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    ro = DecodedImages(transform, root=blocker / "sub")  # cannot be created
    assert torch.equal(ro.pixels(path), good) and not ro.write
    assert "not writable" in caplog.text


def test_training_cache_setting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEDFUSE_IMAGE_CACHE", "0")
    assert training_cache(ImageTransform(16)) is None
    monkeypatch.setenv("MEDFUSE_IMAGE_CACHE", str(tmp_path / "here"))
    cache = training_cache(ImageTransform(16))
    assert cache is not None and cache.dir.parent == tmp_path / "here"
    monkeypatch.delenv("MEDFUSE_IMAGE_CACHE")
    monkeypatch.setenv("MEDFUSE_HOME", str(tmp_path / "home"))
    cache = training_cache(ImageTransform(16))
    assert cache is not None and cache.dir.parent == tmp_path / "home" / "decoded"


def test_dataset_samples_identical_with_the_cache(tiny_dir: Path, tmp_path: Path) -> None:
    spec = DataSpec(image="image", target="label")
    df = pd.read_csv(tiny_dir / "data.csv")
    df["image"] = [str(tiny_dir / p) for p in df["image"]]
    pre = Preprocessor(spec, image=ImageTransform(20)).fit(df)
    plain = MultimodalDataset(df, pre, augment=True)
    cached = MultimodalDataset(df, pre, augment=True,
                               decoded=DecodedImages(pre.image, root=tmp_path))
    for epoch in range(2):  # the second epoch reads from the cache
        for i in range(len(df)):
            a, b = plain[(i, 100 * epoch + i)], cached[(i, 100 * epoch + i)]
            assert torch.equal(a["image"], b["image"]) and torch.equal(a["target"], b["target"])
    assert cached.decoded is not None and cached.decoded.hits == len(df)


def test_fast_extraction_equals_the_plain_loop(tiny_dir: Path, tmp_path: Path) -> None:
    from medfuse.encoders.image import ImageEncoder
    from medfuse.extraction import encode_images
    from medfuse.hybrid import extract_image_features

    paths = _paths(tiny_dir)
    torch.manual_seed(0)
    enc = ImageEncoder("small_cnn", pretrained="none", image_size=32, freeze=True).eval()
    with torch.inference_mode():
        expected = enc(torch.stack([enc.transform(read_image(p)) for p in paths])).numpy()
    # chunks smaller than the batch and than the list: order must survive the overlap
    got = encode_images(enc, enc.transform, paths, batch_size=4, chunk=5, threads=3,
                        decoded=DecodedImages(enc.transform, root=tmp_path))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    twice = extract_image_features(enc, enc.transform, paths + paths[:3], progress=False,
                                   decoded=DecodedImages(enc.transform, root=tmp_path))
    np.testing.assert_allclose(twice[: len(paths)], expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(twice[len(paths):], twice[:3])


@pytest.mark.parametrize("size", [96, 101])  # odd sizes pad unevenly
def test_onnx_encoder_pads_tf_same_convolutions_statically(tmp_path: Path, size: int) -> None:
    import onnx
    from timm.layers import Conv2dSame

    from medfuse.encoders.image import ImageEncoder
    from medfuse.extraction import OnnxEncoder, static_same_padding

    enc = ImageEncoder("tf_efficientnet_lite0", pretrained="builtin", image_size=size,
                       freeze=True).eval()
    assert any(isinstance(m, Conv2dSame) for m in enc.modules())
    x = torch.rand(3, 3, size, size)
    fixed = static_same_padding(enc, x[:1])
    assert not any(isinstance(m, Conv2dSame) for m in fixed.modules())
    assert any(isinstance(m, Conv2dSame) for m in enc.modules())  # the original is kept
    with torch.inference_mode():
        expected = enc(x).numpy()
        np.testing.assert_array_equal(fixed(x).numpy(), expected)
    onnx_enc = OnnxEncoder(enc, size, folder=tmp_path)
    ops = {n.op_type for n in onnx.load(str(onnx_enc.path)).graph.node}
    assert not ops & {"Shape", "Ceil", "Gather"}, ops  # no padding computed at run time
    np.testing.assert_allclose(onnx_enc(x), expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(onnx_enc(x[:1]), expected[:1], rtol=1e-4, atol=1e-5)


def test_precision_resolution(monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve_precision("32") == resolve_precision("32-true") == "32-true"
    monkeypatch.setenv("MEDFUSE_BF16", "0")
    native_bf16.cache_clear()
    try:
        assert resolve_precision("auto", "cpu") == "32-true"
        assert resolve_precision("bf16-mixed", "cpu") == "32-true"  # emulated bf16 is slower
        assert not use_bf16("bf16-mixed")
        monkeypatch.setenv("MEDFUSE_BF16", "1")
        native_bf16.cache_clear()
        assert resolve_precision("auto", "cpu") == "bf16-mixed"
        assert resolve_precision("bf16", "cpu") == "bf16-mixed"
        assert use_bf16("auto") and not use_bf16("32-true")
    finally:
        native_bf16.cache_clear()


def test_auto_precision_keeps_small_networks_in_fp32(monkeypatch: pytest.MonkeyPatch) -> None:
    from medfuse.estimators import FusionClassifier

    monkeypatch.setenv("MEDFUSE_BF16", "1")
    native_bf16.cache_clear()
    try:
        text = FusionClassifier(DataSpec(text="note", target="y"), precision="auto")
        image = FusionClassifier(DataSpec(image="img", target="y"), precision="auto",
                                 accelerator="cpu")
        assert text.training_precision() == "32-true"
        assert image.training_precision() == "bf16-mixed"
    finally:
        native_bf16.cache_clear()


@pytest.mark.skipif(not os.path.exists("/proc/cpuinfo"), reason="Linux CPU flags")
def test_native_bf16_follows_the_cpu_flags() -> None:
    from medfuse.perf import cpu_flags

    native_bf16.cache_clear()
    has_flag = bool({"avx512_bf16", "amx_bf16"} & cpu_flags())
    if os.environ.get("MEDFUSE_BF16") is None:
        assert native_bf16() == (has_flag and torch.ops.mkldnn._is_mkldnn_bf16_supported())
