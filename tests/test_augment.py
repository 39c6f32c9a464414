"""Configurable augmentation (per seed, epoch and row) and DullRazor hair removal."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from medfuse.config import AugmentSpec, DataSpec, load_config
from medfuse.data.augment import augment_spec
from medfuse.data.dataset import MultimodalDataset
from medfuse.data.hair import hair_mask, remove_hair
from medfuse.data.preprocess import ImageTransform, Preprocessor
from medfuse.errors import ConfigError


def test_augment_accepts_bool_or_mapping_and_names_unknown_keys() -> None:
    assert load_config("synth_derm", ["train.augment=true"]).train.augment == AugmentSpec()
    off = load_config("synth_derm", ["train.augment=false"]).train.augment
    assert not off.active and AugmentSpec().active
    spec = load_config("synth_derm", ["train.augment={vflip: 0.5, color_jitter: 0.1}"])
    assert spec.train.augment.vflip == 0.5 and spec.train.augment.hflip == 0.5  # default kept
    with pytest.raises(ConfigError, match=r"unknown key 'train.augment.hfip'.*Did you mean "
                                          r"'hflip'"):
        load_config("synth_derm", ["train.augment={hfip: 0.5}"])
    with pytest.raises(ConfigError, match=r"'train.augment.rotate'.*less than or equal to 180"):
        load_config("synth_derm", ["train.augment={rotate: 400}"])
    with pytest.raises(ConfigError, match=r"'train.augment': must be true, false or a mapping"):
        load_config("synth_derm", ["train.augment=sometimes"])
    assert augment_spec({"hflip": 1.0}).hflip == 1.0 and not augment_spec(False).active


@pytest.fixture()
def dataset_args(tiny_dir: Path) -> tuple[pd.DataFrame, Preprocessor]:
    from medfuse.data import load_table

    spec = DataSpec(image="image", target="label")
    df, _ = load_table(tiny_dir / "data.csv", spec)
    df = df[df["image"].str.endswith(".png")].reset_index(drop=True)
    pre = Preprocessor(spec, image=ImageTransform(32, (0.4, 0.5, 0.6), (0.2, 0.2, 0.2))).fit(df)
    return df, pre


def test_augmentation_depends_on_the_row_seed_only(
    dataset_args: tuple[pd.DataFrame, Preprocessor]
) -> None:
    df, pre = dataset_args
    aug = {"hflip": 0.5, "vflip": 0.5, "rotate": 30, "color_jitter": 0.3,
           "random_resized_crop": 0.6}
    ds = MultimodalDataset(df, pre, augment=aug)
    plain = MultimodalDataset(df, pre)[0]
    a, b, c = ds[(0, 11)]["image"], ds[(0, 11)]["image"], ds[(0, 12)]["image"]
    torch.manual_seed(0)  # the global generator plays no part
    again = MultimodalDataset(df, pre, augment=aug)[(0, 11)]["image"]
    assert torch.equal(a, b) and torch.equal(a, again) and not torch.equal(a, c)
    assert a.shape == plain["image"].shape == (3, 32, 32)
    assert not torch.equal(a, plain["image"])
    # no augmentation: exactly the prediction-time input
    for off in (False, {"hflip": 0, "rotate": 0, "translate": 0, "scale": 0}):
        assert torch.equal(MultimodalDataset(df, pre, augment=off)[(0, 11)]["image"],
                           plain["image"])


def test_each_step_does_what_it_says(dataset_args: tuple[pd.DataFrame, Preprocessor]) -> None:
    df, pre = dataset_args
    plain = MultimodalDataset(df, pre)[0]["image"]
    still = {"hflip": 0.0, "rotate": 0.0, "translate": 0.0, "scale": 0.0}
    vflip = MultimodalDataset(df, pre, augment={**still, "vflip": 1.0})[(0, 1)]["image"]
    torch.testing.assert_close(vflip, plain.flip(1))
    hflip = MultimodalDataset(df, pre, augment={**still, "hflip": 1.0})[(0, 1)]["image"]
    torch.testing.assert_close(hflip, plain.flip(2))
    turned = MultimodalDataset(df, pre, augment={**still, "rot90": 1.0})[(0, 1)]["image"]
    torch.testing.assert_close(turned, plain.rot90(1, dims=(1, 2)))
    # a 90-degree-at-most rotation uncovers corners, filled with the normalisation mean (-> 0)
    rot = MultimodalDataset(df, pre, augment={**still, "rotate": 90})
    corners = torch.stack([rot[(0, s)]["image"][:, 0, 0] for s in range(20)])
    assert (corners.abs() < 0.02).all(dim=1).sum() >= 10
    jitter = MultimodalDataset(df, pre, augment={**still, "color_jitter": 0.5})[(0, 1)]["image"]
    assert not torch.equal(jitter, plain)
    crop = MultimodalDataset(df, pre, augment={**still, "random_resized_crop": 0.3})
    assert crop[(0, 1)]["image"].shape == plain.shape and not torch.equal(crop[(0, 1)]["image"],
                                                                           plain)


def test_flips_and_quarter_turns_reach_all_eight_symmetries(
    dataset_args: tuple[pd.DataFrame, Preprocessor]
) -> None:
    df, pre = dataset_args
    plain = MultimodalDataset(df, pre)[0]["image"]
    ds = MultimodalDataset(df, pre, augment={"hflip": 0.5, "vflip": 0.5, "rot90": 0.5,
                                             "rotate": 0.0, "translate": 0.0, "scale": 0.0})
    views = [plain.rot90(k, dims=(1, 2)) for k in range(4)]
    views += [v.flip(2) for v in views]
    counts = [0] * 8
    for seed in range(400):
        out = ds[(0, seed)]["image"]
        counts[next(i for i, v in enumerate(views) if torch.equal(out, v))] += 1
    assert min(counts) >= 25, counts  # each of the 8 about 50 times in 400


def _hairy_lesion(n: int = 224) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(clean image, with hairs, hair mask, lesion mask): a dark blob on skin, dark lines."""
    from skimage.draw import disk, line_aa

    rng = np.random.default_rng(0)
    clean = np.empty((n, n, 3), np.float32)
    clean[...] = (205, 160, 140)
    clean += rng.normal(0, 4, clean.shape)
    lesion = np.zeros((n, n), bool)
    lesion[disk((n // 2, n // 2), n // 6)] = True
    clean[lesion] = (90, 55, 45)
    clean = np.clip(clean, 0, 255).astype(np.uint8)
    img = clean.astype(np.float32)
    hair = np.zeros((n, n), bool)
    for r0, c0, r1, c1 in [(0, 10, n - 1, 60), (20, n - 1, 200, 0), (100, 0, 120, n - 1)]:
        rr, cc, val = line_aa(r0, c0, r1, c1)
        for dr in (0, 1):  # two pixels wide
            r = np.clip(rr + dr, 0, n - 1)
            img[r, cc] = img[r, cc] * (1 - val[:, None]) + np.array([40, 30, 25]) * val[:, None]
            hair[r, cc] |= val > 0.3
    return clean, img.astype(np.uint8), hair, lesion


def test_hair_removal_removes_thin_dark_lines_and_keeps_the_lesion() -> None:
    clean, hairy, hair, lesion = _hairy_lesion()
    out = remove_hair(hairy)
    on_skin = hair & ~lesion
    before = np.abs(hairy.astype(float) - clean)[on_skin].mean()
    after = np.abs(out.astype(float) - clean)[on_skin].mean()
    assert before > 60 and after < 0.15 * before  # the lines are (mostly) gone
    from scipy import ndimage

    near_hair = ndimage.binary_dilation(hair, iterations=3)
    core = ndimage.binary_erosion(lesion, iterations=4) & ~near_hair
    assert np.abs(out[core].astype(float) - clean[core]).mean() < 2  # the lesion stays
    assert out[core].mean() < 80
    untouched = ~ndimage.binary_dilation(hair, iterations=4)
    assert np.abs(out[untouched].astype(float) - clean[untouched]).mean() < 1
    mask = hair_mask(hairy)
    assert mask[on_skin].mean() > 0.9 and mask[core].mean() < 0.01
    # a clean image has nothing to remove
    assert hair_mask(clean).mean() < 0.001


def test_hair_removal_is_part_of_the_saved_transform(tmp_path: Path) -> None:
    from PIL import Image

    spec = DataSpec(image="image", target="label", hair_removal=True)
    df = pd.DataFrame({"image": ["a.png", "b.png"], "label": ["0", "1"]})
    pre = Preprocessor(spec, image=ImageTransform(224)).fit(df)
    assert pre.image.hair_removal
    pre.save(tmp_path / "pre.json")
    loaded = Preprocessor.load(tmp_path / "pre.json")
    assert loaded.image == pre.image
    _, hairy, hair, _ = _hairy_lesion()
    x = loaded.image(Image.fromarray(hairy))
    plain = ImageTransform(224)(Image.fromarray(hairy))
    assert x.shape == plain.shape == (3, 224, 224)
    assert x[:, hair].mean() > plain[:, hair].mean() + 0.5  # hairs brightened to skin
    old = {k: v for k, v in ImageTransform(224).to_dict().items() if k != "hair_removal"}
    assert not ImageTransform.from_dict(old).hair_removal  # older preprocess.json files
    with pytest.raises(ConfigError, match="need an image column"):
        load_config("iu_xray", ["data.hair_removal=true"])
