"""Image encoders: builtin ImageNet weights on real photos, shapes, transforms, weight errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch
from PIL import Image

from medfuse.encoders.image import (
    ImageEncoder,
    SmallCNN,
    builtin_weights_path,
    load_builtin,
    load_builtin_lite0,
)
from medfuse.errors import ConfigError

SKLEARN_IMAGES = Path(pytest.importorskip("sklearn").__file__).parent / "datasets" / "images"


def _center_square(path: Path) -> Image.Image:
    img = Image.open(path).convert("RGB")
    w, h = img.size
    s = min(w, h)
    return img.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s))


@pytest.fixture(scope="module")
def lite0() -> ImageEncoder:
    return ImageEncoder("tf_efficientnet_lite0", pretrained="builtin").eval()


@pytest.fixture(scope="module")
def full_lite0() -> torch.nn.Module:
    """The 1000-class ImageNet classifier with the builtin weights."""
    full = timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=1000)
    load_builtin_lite0(full)
    return full.eval()


def test_builtin_weights_classify_real_photos(
    lite0: ImageEncoder, full_lite0: torch.nn.Module
) -> None:
    # Real photos shipped with scikit-learn: the Summer Palace tower (china.jpg) and a
    # dahlia (flower.jpg; ImageNet has no dahlia class, 'daisy' is its flower class).
    # Centre-cropped to a square first: ImageTransform squashes non-square images.
    full = full_lite0
    photos = [_center_square(SKLEARN_IMAGES / f) for f in ("china.jpg", "flower.jpg")]
    x = torch.stack([lite0.transform(p) for p in photos])
    with torch.no_grad():
        proba = full(x).softmax(-1)
        feats = lite0(x)
        pooled = full.forward_head(full.forward_features(x), pre_logits=True)
    top_p, top_i = proba.max(-1)
    assert top_i.tolist() == [698, 985]  # 'palace', 'daisy'
    assert top_p[0] > 0.25 and top_p[1] > 0.15
    assert proba.max() > 100 / 1000  # far from uniform
    # the encoder is the same network without its classifier
    torch.testing.assert_close(feats, pooled)


def test_builtin_loads_by_position(full_lite0: torch.nn.Module) -> None:
    src = torch.load(builtin_weights_path(), map_location="cpu", weights_only=True)
    tgt = full_lite0.state_dict()
    assert len(src) == len(tgt) == 296
    for a, b in zip(src.values(), tgt.values(), strict=True):
        assert torch.equal(a, b)


def test_builtin_shape_mismatch_is_clear() -> None:
    model = timm.create_model("tf_efficientnet_lite1", pretrained=False, num_classes=0)
    with pytest.raises(ConfigError, match=r"tf_efficientnet_lite0"):
        load_builtin_lite0(model)


@pytest.mark.parametrize(
    ("backbone", "pretrained", "dim"),
    [
        ("tf_efficientnet_lite0", "builtin", 1280),
        ("resnet18", "none", 512),
        ("small_cnn", "none", 256),
    ],
)
def test_output_shapes(backbone: str, pretrained: str, dim: int) -> None:
    enc = ImageEncoder(backbone, pretrained=pretrained)
    assert enc.output_dim == dim
    out = enc(torch.randn(2, 3, 64, 64))
    assert out.shape == (2, dim)
    assert out.requires_grad


def test_freeze_keeps_backbone_frozen_and_in_eval() -> None:
    enc = ImageEncoder("resnet18", pretrained="none", freeze=True)
    assert not any(p.requires_grad for p in enc.parameters())
    enc.train()
    assert not any(m.training for m in enc.backbone.modules())
    bn = enc.backbone.bn1
    before = bn.running_mean.clone()
    enc(torch.randn(2, 3, 64, 64))
    assert torch.equal(bn.running_mean, before)
    assert ImageEncoder("small_cnn", pretrained="none").train().backbone.training


def test_transforms(lite0: ImageEncoder) -> None:
    t = lite0.transform
    assert (t.size, t.mean, t.std) == (224, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    enc = ImageEncoder("tf_efficientnet_lite0", pretrained="builtin", image_size=160)
    assert enc.transform.size == 160 and enc.transform.mean == (0.5, 0.5, 0.5)
    r18 = ImageEncoder("resnet18", pretrained="none").transform
    assert r18.size == 224 and r18.mean == pytest.approx((0.485, 0.456, 0.406))
    cnn = ImageEncoder("small_cnn", pretrained="none").transform
    assert cnn.size == 128 and cnn.std == pytest.approx((0.229, 0.224, 0.225))
    assert ImageEncoder("small_cnn", pretrained="none", image_size=64).transform.size == 64
    x = t(Image.new("RGB", (300, 200), (255, 0, 128)))
    assert x.shape == (3, 224, 224) and x.max() == 1.0 and x.min() == -1.0


def test_small_cnn_channels() -> None:
    cnn = SmallCNN(channels=(8, 16, 24), dropout=0.0)
    assert cnn.output_dim == 24
    assert cnn(torch.randn(3, 3, 40, 40)).shape == (3, 24)


@pytest.mark.parametrize(
    ("backbone", "pretrained", "pattern"),
    [
        (
            "tf_efficientnet_lite",
            "none",
            r"'tf_efficientnet_lite'.*Did you mean 'tf_efficientnet_lite\d",
        ),
        ("resnet19", "none", r"'resnet19'.*Did you mean 'resnet"),
        ("smallcnn", "none", r"Did you mean 'small_cnn'"),
        ("resnet18", "builtin", r"only available for.*'resnet18'.*'none', 'hub' or a local"),
        ("small_cnn", "builtin", r"'small_cnn' has no 'builtin'"),
        ("resnet18", "imagenet", r"'builtin', 'none', 'hub'.*'imagenet'"),
        ("resnet18", "buildin", r"Did you mean 'builtin'"),
        ("resnet18", "/no/such/weights.pth", r"'/no/such/weights.pth' does not exist"),
    ],
)
def test_config_errors(backbone: str, pretrained: str, pattern: str) -> None:
    with pytest.raises(ConfigError, match=pattern):
        ImageEncoder(backbone, pretrained=pretrained)


def test_hub_failure_is_wrapped(monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(*args: object, **kwargs: object) -> None:
        raise OSError("Name or service not known")

    monkeypatch.setattr(timm, "create_model", offline)
    with pytest.raises(ConfigError, match=r"hub is unreachable.*'builtin'.*local"):
        ImageEncoder("resnet18", pretrained="hub")


def test_weights_from_other_backbone(tmp_path: Path) -> None:
    path = tmp_path / "r18.pth"
    torch.save(timm.create_model("resnet18", pretrained=False).state_dict(), path)
    with pytest.raises(ConfigError) as info:
        ImageEncoder("tf_efficientnet_lite0", pretrained=str(path))
    msg = str(info.value)
    assert str(path) in msg and "'tf_efficientnet_lite0'" in msg
    assert "missing key(s)" in msg and "conv_stem.weight" in msg and "unexpected" in msg


def test_weights_shape_mismatch_and_garbage(tmp_path: Path) -> None:
    path = tmp_path / "cnn.pt"
    torch.save(SmallCNN(channels=(16, 32, 64, 128)).state_dict(), path)
    with pytest.raises(ConfigError, match=r"shape mismatch.*features\.0\.0\.weight"):
        ImageEncoder("small_cnn", pretrained=path)
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file")
    with pytest.raises(ConfigError, match=r"cannot read weights file .*bad\.safetensors"):
        ImageEncoder("small_cnn", pretrained=str(bad))


@pytest.mark.parametrize("fmt", ["safetensors", "pth"])
def test_local_weights_round_trip(tmp_path: Path, fmt: str) -> None:
    from safetensors.torch import save_file

    src = ImageEncoder("tf_efficientnet_lite0", pretrained="none").eval()
    path = tmp_path / f"lite0.{fmt}"
    if fmt == "safetensors":
        save_file({k: v.contiguous() for k, v in src.backbone.state_dict().items()}, str(path))
    else:  # a whole-encoder checkpoint, nested, with a DataParallel prefix
        sd = {f"module.{k}": v for k, v in src.state_dict().items()}
        torch.save({"state_dict": sd, "epoch": 3}, path)
    dst = ImageEncoder("tf_efficientnet_lite0", pretrained=str(path)).eval()
    assert dst.transform == src.transform
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(src(x), dst(x))


def test_local_weights_ignore_classifier(tmp_path: Path) -> None:
    full = timm.create_model("resnet18", pretrained=False, num_classes=10).eval()
    path = tmp_path / "r18_10cls.pth"
    torch.save(full.state_dict(), path)
    enc = ImageEncoder("resnet18", pretrained=str(path)).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(enc(x), full.forward_head(full.forward_features(x), True))


def test_gem_pool_and_mirror_views() -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 3, 64, 64)
    avg = ImageEncoder("resnet18", pretrained="none", freeze=True)
    gem = ImageEncoder("resnet18", pretrained="none", freeze=True, pool="gem")
    gem.load_state_dict(avg.state_dict())
    fmap = avg.backbone.forward_features(x)
    # generalised mean (p = 3) lies between the average and the maximum of the feature map
    assert torch.all(gem(x) >= avg(x) - 1e-5) and torch.all(gem(x) <= fmap.amax((2, 3)) + 1e-5)
    both = ImageEncoder("resnet18", pretrained="none", freeze=True, pool="gem", views="hflip")
    both.load_state_dict(avg.state_dict())
    mirrored = torch.flip(x, dims=[3])
    torch.testing.assert_close(both(x), both(mirrored))  # left-right invariant
    torch.testing.assert_close(both(x), (gem(x) + gem(mirrored)) / 2)
    eight = ImageEncoder("resnet18", pretrained="none", freeze=True, pool="gem",
                         views="dihedral")
    eight.load_state_dict(avg.state_dict())
    assert not torch.allclose(both(x), both(torch.rot90(x, 1, dims=(2, 3))), atol=1e-4)
    for moved in (torch.rot90(x, 1, dims=(2, 3)), torch.rot90(x, 2, dims=(2, 3)),
                  x.transpose(2, 3), torch.flip(x, dims=[2])):
        torch.testing.assert_close(eight(x), eight(moved))  # invariant to all eight


@pytest.mark.parametrize(
    ("kw", "pattern"),
    [
        ({"pool": "mean"}, r"'pool' parameter of ImageEncoder.*'avg', 'gem'"),
        ({"views": "flip"}, r"'views'.*Did you mean 'hflip'"),
        ({"backbone": "small_cnn", "pool": "gem"}, r"pool='gem' needs a timm backbone"),
    ],
)
def test_pool_and_views_errors(kw: dict[str, str], pattern: str) -> None:
    with pytest.raises(ConfigError, match=pattern):
        ImageEncoder(**{"backbone": "resnet18", "pretrained": "none", **kw})


BACKBONES = [  # (name, pooled output_dim); VGG16 is its conv base (fc6 / fc7 dropped)
    ("vgg16", 512),
    ("densenet121", 1024),
    ("resnet18", 512),
    ("resnet50", 2048),
    ("tf_efficientnet_lite0", 1280),
    ("tf_efficientnet_lite1", 1280),
    ("tf_efficientnet_lite2", 1280),
]


@pytest.mark.parametrize(("backbone", "dim"), BACKBONES)
def test_every_listed_backbone_runs_forward_with_avg_and_gem(backbone: str, dim: int) -> None:
    torch.manual_seed(0)
    avg = ImageEncoder(backbone, pretrained="none", image_size=32).eval()
    gem = ImageEncoder(backbone, pretrained="none", image_size=32, pool="gem").eval()
    gem.load_state_dict(avg.state_dict())
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        a, g = avg(x), gem(x)
    assert avg.output_dim == gem.output_dim == dim
    assert a.shape == g.shape == (2, dim) and torch.isfinite(a).all() and torch.isfinite(g).all()
    assert avg.transform.size == 32
    if backbone == "vgg16":  # conv base only: 14.7 M parameters, not 134 M
        assert sum(p.numel() for p in avg.parameters()) < 15_000_000


@pytest.mark.parametrize(("k", "size"), [(1, 240), (2, 260)])
def test_builtin_lite1_lite2_recognise_a_cat(k: int, size: int) -> None:
    from skimage import data

    name = f"tf_efficientnet_lite{k}"
    enc = ImageEncoder(name, pretrained="builtin")
    assert enc.transform.size == size and enc.transform.mean == (0.5, 0.5, 0.5)
    full = timm.create_model(name, pretrained=False, num_classes=1000).eval()
    load_builtin(full, name)
    x = enc.transform(Image.fromarray(data.chelsea()))[None]
    with torch.no_grad():
        proba = full(x).softmax(-1)[0]
        torch.testing.assert_close(enc.eval()(x), full.forward_head(full.forward_features(x),
                                                                    pre_logits=True))
    assert int(proba.argmax()) == 285 and proba.max() > 0.5  # 'Egyptian cat'


def test_vgg16_weights_file_with_its_fc_layers_loads(tmp_path: Path) -> None:
    src = ImageEncoder("vgg16", pretrained="none").backbone.state_dict()
    # a whole VGG16's file also holds fc6 / fc7 (pre_logits.fc1 / fc2) and the classifier
    extra = {"pre_logits.fc1.weight": torch.zeros(8, 512, 7, 7), "pre_logits.fc1.bias":
             torch.zeros(8), "head.fc.weight": torch.zeros(10, 8), "head.fc.bias": torch.zeros(10)}
    path = tmp_path / "vgg16.pth"
    torch.save({**src, **extra}, path)
    enc = ImageEncoder("vgg16", pretrained=str(path)).eval()
    torch.testing.assert_close(enc.backbone.features[0].weight, src["features.0.weight"])
