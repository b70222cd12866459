"""Architectures from segmentation_models_pytorch (smp): UNet, UNet++, FPN, DeepLabV3(+), SegFormer, UPerNet, MAnet on
any smp or timm encoder (`[model] encoder`), with optional pretrained encoder weights (`[model] encoder_weights`).

Each model is an `EncoderSegmenter`: an `InputNormalization` (the encoder's mean/std, stored as buffers, so every
path that calls the model - training, evaluation, inference, tiled inference, TTA, ONNX - normalises the same way
and the checkpoint carries the statistics) followed by the smp network. The seed's DeepLabV3+ and EfficientNet
UNets are these builds with the seed's encoder (`deeplabv3plus` on resnet50, `efficient_unet` on efficientnet-bN).

`encoder_weights` is a tag smp/timm knows (e.g. "imagenet"), downloaded by their own hub code, or a local
.pth/.pt/.safetensors file loaded into the encoder with every key checked.
"""
from __future__ import annotations

import difflib
import functools
import os
import socket
import sys
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from pathlib import Path
from types import ModuleType
from urllib.parse import urlparse

import torch
from torch import Tensor, nn

from flexunet.config.schema import ModelSection
from flexunet.config.section import looks_like_file
from flexunet.errors import CheckpointError, ConfigError
from flexunet.models.registry import read_state_dict, register_model

# registry name -> smp architecture name
ARCHITECTURES = {
    "unet": "unet", "unetplusplus": "unetplusplus", "fpn": "fpn", "deeplabv3plus": "deeplabv3plus",
    "segformer": "segformer", "upernet": "upernet", "manet": "manet", "deeplabv3": "deeplabv3",
}
# not registered: pspnet (it uses 3 encoder stages, and a timm encoder keeps the others as weights without gradients),
# linknet (no decoder width to set), pan (needs inputs of 128 px and more), dpt (timm ViT encoders only)
# the encoder used when [model] encoder is not set: the seed's ResNet-50 for DeepLabV3+, resnet34 otherwise
DEFAULT_ENCODER = {"deeplabv3plus": "resnet50"}
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
# smp's own encoders whose weights expect other statistics (smp keeps them on its hub; these need no network)
_OTHER_STATS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "inceptionv4": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
    "inceptionresnetv2": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
    "dpn": ((124 / 255, 117 / 255, 104 / 255), (0.2348, 0.2348, 0.2348)),
}
_HALF = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))  # efficientnet 'advprop' weights take inputs in [-1, 1]


def _declare_missing_torchvision_ops() -> None:
    """PyPI's torchvision is linked against the CUDA build of torch; beside the CPU build its compiled ops cannot
    load and `import torchvision` stops at registering a fake kernel for two of them. Declaring their schemas lets
    its pure-Python modules (transforms, model definitions, FrozenBatchNorm2d: all smp and timm use) import; the
    detection ops themselves stay unavailable, as torchvision's own `_has_ops()` reports."""
    lib = torch.library.Library("torchvision", "FRAGMENT")
    lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    lib.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    _declare_missing_torchvision_ops.library = lib  # type: ignore[attr-defined]  # keep the fragment alive


@functools.cache
def import_smp() -> ModuleType:
    """segmentation_models_pytorch, imported on first use (it loads timm and torchvision: seconds, ~100 MB)."""
    try:
        import torchvision  # noqa: F401  (smp and timm import it)
    except RuntimeError as exc:
        if "torchvision::nms does not exist" not in str(exc):
            raise
        for name in [n for n in sys.modules if n == "torchvision" or n.startswith("torchvision.")]:
            del sys.modules[name]
        _declare_missing_torchvision_ops()
        import torchvision  # noqa: F401
    import segmentation_models_pytorch as smp

    return smp


def import_timm() -> ModuleType:
    """timm, after torchvision is importable (see import_smp)."""
    import_smp()
    import timm

    return timm


class InputNormalization(nn.Module):
    """(x - mean) / std per channel, on the [0, 1] input; mean and std are buffers, saved in the state_dict."""

    mean: Tensor
    std: Tensor

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)


class EncoderSegmenter(nn.Module):
    """The encoder's input normalisation, then an smp encoder-decoder; returns logits (N, num_classes, H, W).

    `freeze_batch_norm` (set by training) keeps the encoder's BatchNorm layers in eval mode under `.train()`."""

    def __init__(self, net: nn.Module, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.normalize = InputNormalization(mean, std)
        self.net = net
        self.freeze_batch_norm = False

    @property
    def encoder(self) -> nn.Module:
        return self.net.encoder  # type: ignore[return-value]

    def train(self, mode: bool = True) -> EncoderSegmenter:
        super().train(mode)
        if mode and self.freeze_batch_norm:
            for module in self.encoder.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.eval()
        return self

    def forward(self, x: Tensor) -> Tensor:
        return self.net(self.normalize(x))


def encoder_names() -> list[str]:
    """Every encoder smp knows by its own name."""
    return list(import_smp().encoders.get_encoder_names())


def check_encoder_name(section: ModelSection, name: str) -> None:
    """ConfigError with close names when neither smp nor timm (for `tu-` names) has encoder `name`."""
    if name.startswith("tu-"):
        timm = import_timm()

        known = timm.list_models()
        if name[3:] in known:
            return
        close = ["tu-" + n for n in difflib.get_close_matches(name[3:], known, n=3)]
    else:
        known = encoder_names()
        if name in known:
            return
        close = difflib.get_close_matches(name, known, n=3)
    hint = f"did you mean {', '.join(close)}?" if close else "see smp's encoder list, or timm's models with 'tu-'"
    raise ConfigError(f"{section.where('encoder')} = {name!r}: unknown encoder; {hint}")


def encoder_statistics(encoder: str, weights: str | None, channels: int) -> tuple[list[float], list[float]]:
    """Mean and std the encoder's pretrained weights expect, one value per input channel (grey: their mean).

    timm encoders take them from timm's pretrained config (no network); smp's own from a small table."""
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    tag = weights if weights and not looks_like_file(weights) else None
    if encoder.startswith("tu-"):
        timm = import_timm()

        name = f"{encoder[3:]}.{tag}" if tag and tag != "imagenet" else encoder[3:]
        cfg = timm.models.get_pretrained_cfg(name, allow_unregistered=False)
        if cfg is not None:
            mean, std = tuple(cfg.mean), tuple(cfg.std)
    elif tag == "advprop":
        mean, std = _HALF
    else:
        for prefix, stats in _OTHER_STATS.items():
            if encoder.startswith(prefix):
                mean, std = stats
    if channels == len(mean):
        return list(mean), list(std)
    return [sum(mean) / len(mean)] * channels, [sum(std) / len(std)] * channels


def hub_error(section: ModelSection, encoder: str, tag: str, exc: BaseException, offline: str | None = None
              ) -> ConfigError:
    """One line: what could not be had, why (the hub unreachable, or the library's whole first line), what to do."""
    if offline:
        why = f"they are not in the local cache and {offline}"
    else:
        why = f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0]}"
    return ConfigError(
        f"{section.where('encoder_weights')} = {tag!r}: could not download the {tag!r} weights of encoder "
        f"{encoder!r} ({why}); without a network, give a local file instead: "
        f"encoder_weights = \"path/to/{encoder}.pth\" (or .safetensors)")


@contextmanager
def hub_or_offline(timeout_s: float = 3.0) -> Iterator[str | None]:
    """Around a download of pretrained weights: None when the Hugging Face hub can be reached (or a proxy is set);
    else why not, with huggingface_hub in offline mode meanwhile, so weights in its cache still load and missing
    ones fail at once. Without this, an offline machine waited ~30 s through five retries, printing each."""
    try:
        from huggingface_hub import constants
    except ImportError:
        yield None
        return
    if constants.HF_HUB_OFFLINE:
        yield "HF_HUB_OFFLINE is set"
        return
    if any(os.environ.get(k) for k in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        yield None  # the proxy decides; a direct connection says nothing
        return
    host = urlparse(constants.ENDPOINT).hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=timeout_s).close()
    except OSError as exc:
        constants.HF_HUB_OFFLINE = True
        try:
            yield f"{host} cannot be reached ({exc.strerror or exc})"
        finally:
            constants.HF_HUB_OFFLINE = False
        return
    yield None


def decoder_widths(arch: str, widest: int | None) -> dict[str, object]:
    """smp's decoder width arguments for [model] decoder_channels (nothing: smp's defaults)."""
    if widest is None:
        return {}
    if arch in ("unet", "unetplusplus", "manet"):
        return {"decoder_channels": tuple(max(widest >> i, 16) for i in range(5))}
    if arch == "fpn":
        # its segmentation blocks use GroupNorm with 32 groups: a multiple of 32
        return {"decoder_pyramid_channels": widest, "decoder_segmentation_channels": max(32, widest // 64 * 32)}
    if arch == "segformer":
        return {"decoder_segmentation_channels": widest}
    return {"decoder_channels": widest}  # deeplabv3plus, upernet


def create_network(section: ModelSection, arch: str, encoder: str, tag: str | None) -> nn.Module:
    """smp.create_model, with smp's rejections and hub failures as one-line ConfigErrors."""
    smp = import_smp()
    kwargs: dict[str, object] = decoder_widths(arch, section.decoder_channels)
    if arch == "deeplabv3plus":
        kwargs["encoder_output_stride"] = 16
    offline: str | None = None
    try:
        with hub_or_offline() if tag else nullcontext() as offline:
            return smp.create_model(arch, encoder_name=encoder, encoder_weights=tag,
                                    in_channels=section.image_channels, classes=section.num_classes, **kwargs)
    except KeyError as exc:  # smp: a weights tag this encoder does not have
        text = str(exc.args[0]) if exc.args else str(exc)
        raise ConfigError(f"{section.where('encoder_weights')} = {tag!r}: {text}") from None
    except (ValueError, AttributeError, TypeError, AssertionError) as exc:  # smp: this encoder/decoder pair
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        widths = f" with [model] decoder_channels = {section.decoder_channels}" if section.decoder_channels else ""
        raise ConfigError(f"{section.where('encoder')} = {encoder!r}: {arch} cannot use it{widths} ({first})") from None
    except (OSError, ConnectionError, RuntimeError) as exc:  # the hub: no network, no such file, ...
        if tag is None:
            raise
        raise hub_error(section, encoder, tag, exc, offline) from None


def read_weights_file(path: Path, where: str) -> dict[str, Tensor]:
    """A state_dict from a .safetensors file or a torch file (read with weights_only: data, never code)."""
    if not path.is_file():
        raise CheckpointError(f"{where} = {str(path)!r}: file not found (a tag such as \"imagenet\" has no '/' "
                              "and no weights suffix)")
    return read_state_dict(path, "weights file")


# keys of a classifier head that an encoder never has: reported, then left out
_CLASSIFIER_PREFIXES = ("fc.", "classifier.", "head.", "last_linear.", "_fc.", "_conv_head.", "_bn1.")


def load_encoder_weights(encoder: nn.Module, path: Path, where: str) -> None:
    """Load a local file into `encoder`: every encoder tensor must be there with its shape. A file of a whole
    flexunet/smp model gives its encoder part. Classifier keys are left out with a warning; anything else that
    does not fit is a CheckpointError listing the keys."""
    state = read_weights_file(path, where)
    for prefix in ("net.encoder.", "encoder."):  # a whole EncoderSegmenter, or a whole smp model
        if any(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
            break
    expected = encoder.state_dict()
    mismatched = [f"{k} {tuple(v.shape)} vs {tuple(expected[k].shape)}"
                  for k, v in state.items() if k in expected and v.shape != expected[k].shape]
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    head = [k for k in unexpected if k.startswith(_CLASSIFIER_PREFIXES)]
    other = [k for k in unexpected if k not in head]
    problems = [f"{label}: {', '.join(keys[:4])}" + (f", ... ({len(keys)} in all)" if len(keys) > 4 else "")
                for label, keys in (("shape differs", mismatched), ("missing", missing), ("not in the encoder", other))
                if keys]
    if problems:
        raise CheckpointError(f"{where} = {str(path)!r}: not weights of this encoder ({'; '.join(problems)})")
    if head:
        warnings.warn(f"{where}: {path}: classifier tensors left out: {', '.join(sorted(head))}", stacklevel=3)
    encoder.load_state_dict({k: v for k, v in state.items() if k in expected}, strict=True)


def check_input_size(section: ModelSection, net: nn.Module, encoder: str) -> None:
    """Height and width must be multiples of what the encoder (and decoder) need: ConfigError before training."""
    if not getattr(net, "requires_divisible_input_shape", True):
        return
    step = int(net.encoder.output_stride)  # type: ignore[union-attr, arg-type]
    for key in ("image_height", "image_width"):
        value = getattr(section, key)
        if value % step:
            fix = max(step, round(value / step) * step)
            raise ConfigError(f"{section.where(key)} = {value}: must be divisible by {step} (what encoder "
                              f"{encoder!r} needs with this decoder); try {fix}")


def build_smp(section: ModelSection, arch: str, encoder: str) -> EncoderSegmenter:
    """An smp `arch` on `encoder` with [model] encoder_weights, behind the encoder's input normalisation."""
    check_encoder_name(section, encoder)
    weights = section.encoder_weights
    local = weights is not None and looks_like_file(weights)
    net = create_network(section, arch, encoder, None if local else weights)
    check_input_size(section, net, encoder)
    if encoder.startswith("efficientnet-"):
        # smp keeps EfficientNet's classifier conv and BN but never calls them: drop the dead weights (they would
        # get no gradient, and DistributedDataParallel fails on parameters without one)
        net.encoder._conv_head = net.encoder._bn1 = None  # type: ignore[union-attr]
        # its BatchNorm momentum is TF's 0.01: from fresh weights the running statistics lag the training ones for
        # thousands of steps and the model predicts nothing in eval mode (IoU 0.5 after 60 steps in the tests)
        for module in net.encoder.modules():  # type: ignore[union-attr]
            if isinstance(module, nn.BatchNorm2d):
                module.momentum = 0.1
    if local:
        assert weights is not None
        load_encoder_weights(net.encoder, Path(weights), section.where("encoder_weights"))  # type: ignore[arg-type]
    mean, std = encoder_statistics(encoder, weights, section.image_channels)
    return EncoderSegmenter(net, mean, std)




def _register(name: str) -> None:
    def build(section: ModelSection) -> EncoderSegmenter:
        return build_smp(section, ARCHITECTURES[name], section.encoder or DEFAULT_ENCODER.get(name, "resnet34"))

    build.__name__ = f"build_{name}"
    register_model(name)(build)


for _name in ARCHITECTURES:
    _register(_name)


EFFICIENTNET_VARIANTS = tuple(f"B{i}" for i in range(8))


@register_model("efficient_unet")
def build_efficient_unet(section: ModelSection) -> EncoderSegmenter:
    """The seed's TensorFlowFlexEfficientUNet: smp's UNet on efficientnet-b0..b7 ([model] efficientnet)."""
    variant = section.efficientnet.strip().upper().removeprefix("EFFICIENTNET").strip("-_")
    if variant not in EFFICIENTNET_VARIANTS:
        raise ConfigError(f"{section.where('efficientnet')} = {section.efficientnet!r}: "
                          f"choose one of {', '.join(EFFICIENTNET_VARIANTS)}")
    return build_smp(section, "unet", f"efficientnet-{variant.lower()}")


@register_model("efficientnet_b7_unet")
def build_efficientnet_b7_unet(section: ModelSection) -> EncoderSegmenter:
    """The seed's TensorFlowFlexEfficientNetB7UNet: smp's UNet on efficientnet-b7."""
    return build_smp(section, "unet", "efficientnet-b7")
