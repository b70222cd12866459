"""Small building blocks shared by several architectures."""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from flexunet.config.catalog import activation_key
from flexunet.config.schema import ModelSection
from flexunet.errors import ConfigError

_ACTIVATIONS: dict[str, type[nn.Module]] = {  # the names of config/catalog.py ACTIVATIONS
    "relu": nn.ReLU, "elu": nn.ELU, "mish": nn.Mish, "gelu": nn.GELU, "silu": nn.SiLU, "swish": nn.SiLU,
    "selu": nn.SELU, "leaky_relu": nn.LeakyReLU, "leakyrelu": nn.LeakyReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid,
}


def make_activation(name: str, section: ModelSection | None = None) -> nn.Module:
    """An activation module by its Keras/PyTorch name (`relu`, `elu`, `mish`, `tf.nn.relu`, `ReLU`, ...)."""
    key = activation_key(name)
    if key not in _ACTIVATIONS:
        where = section.where("activation") if section is not None else "activation"
        raise ConfigError(f"{where} = {name!r}: unknown activation; choose one of {', '.join(sorted(_ACTIVATIONS))}")
    return _ACTIVATIONS[key]()


def require_divisible(section: ModelSection, levels: int) -> None:
    """Height and width must halve cleanly `levels` times."""
    step = 2**levels
    for key in ("image_height", "image_width"):
        value = getattr(section, key)
        if value % step:
            fix = max(step, round(value / step) * step)
            raise ConfigError(f"{section.where(key)} = {value}: must be divisible by 2**{levels} = {step}; try {fix}")


Kernel = int | tuple[int, int]


class Dropout(nn.Dropout):
    """nn.Dropout that, training on the CPU, draws four keep/drop decisions from each 64-bit random number.

    `bernoulli_` draws one number per element and took 6% of a CPU training step of the seed's Pap-Smear UNet
    (measured in benchmarks/run.py, `optimisations`); here p is rounded to a multiple of 1/65536. Other devices
    and eval mode behave exactly as nn.Dropout. Same state_dict (none) and repr.
    """

    def forward(self, x: Tensor) -> Tensor:
        if (not self.training or self.p in (0.0, 1.0) or x.device.type != "cpu" or self.inplace
                or not x.is_floating_point()):
            return super().forward(x)
        n = x.numel()
        words = torch.randint(-(2**63), 2**63 - 1, ((n + 3) // 4,), dtype=torch.int64)
        lanes = words.view(torch.int16)[:n].view(x.shape)  # 4 uniform 16-bit lanes per 64-bit draw
        keep = lanes >= round(self.p * 65536) - 32768  # P(keep) = 1 - p
        return x * (keep.to(x.dtype) * (1.0 / (1.0 - self.p)))


SMALL_MAP_PIXELS = 16  # a benchmark switch too: 0 turns the matmul path off (benchmarks/profile_train.py)


class Conv2d(nn.Conv2d):
    """nn.Conv2d that, training on the CPU on maps of at most SMALL_MAP_PIXELS pixels, runs as one matrix product
    of the unfolded input (im2col) with the weight.

    At a UNet's deepest levels (2x2 and 4x4 maps, 512-1024 channels, batch 4) a convolution does 8-32 FLOPs per
    byte of weight, and oneDNN's convolution backward ran at 4-31% of the machine's sgemm peak there: the
    1024->1024 conv on 2x2 maps alone took 128 of 809 ms of a CPU training step of the seed's Pap-Smear UNet. With
    this path the whole step trains 1.10x faster (benchmarks/results/profile_train.json: profiles with and without
    it, and a same-run A/B of `flexunet train`, 2-core AVX2 EPYC). Larger maps stay on oneDNN.
    Same parameters, state_dict and repr; eval mode, other devices, strided, grouped or non-zero-padded
    convolutions, and even kernels under 'same' padding run nn.Conv2d itself.
    """

    def forward(self, x: Tensor) -> Tensor:
        if (not self.training or x.device.type != "cpu" or x.dim() != 4
                or x.shape[-2] * x.shape[-1] > SMALL_MAP_PIXELS or self.groups != 1 or self.stride != (1, 1)
                or self.padding_mode != "zeros"):
            return super().forward(x)
        kh, kw = self.kernel_size
        dh, dw = self.dilation
        if self.padding == "valid":
            padding = (0, 0)
        elif isinstance(self.padding, str):  # 'same': symmetric only for odd kernels
            if kh % 2 == 0 or kw % 2 == 0:
                return super().forward(x)
            padding = (dh * (kh - 1) // 2, dw * (kw - 1) // 2)
        else:
            padding = (int(self.padding[0]), int(self.padding[1]))
        n, _, h, w = x.shape
        out_h = h + 2 * padding[0] - dh * (kh - 1)
        out_w = w + 2 * padding[1] - dw * (kw - 1)
        if out_h < 1 or out_w < 1:
            return super().forward(x)
        columns = F.unfold(x, self.kernel_size, dilation=self.dilation, padding=padding)  # (N, C*kh*kw, L)
        out = torch.matmul(self.weight.reshape(self.out_channels, -1), columns)  # (N, O, L)
        if self.bias is not None:
            out = out + self.bias[:, None]
        return out.reshape(n, self.out_channels, out_h, out_w)


class ConvNormAct(nn.Sequential):
    """conv -> BatchNorm -> activation: the unit most architectures here are built from (no conv bias: BN has one)."""

    def __init__(
        self, cin: int, cout: int, kernel: Kernel = 3, dilation: Kernel = 1, activation: str = "relu", stride: int = 1
    ) -> None:
        # 'same' padding keeps sizes for any kernel/dilation; a strided conv pads half the kernel instead
        padding: str | int = "same" if stride == 1 else (kernel if isinstance(kernel, int) else kernel[0]) // 2
        super().__init__(
            Conv2d(cin, cout, kernel, stride=stride, padding=padding, dilation=dilation, bias=False),
            nn.BatchNorm2d(cout),
            make_activation(activation),
        )


class ConvStack(nn.Sequential):
    """`count` ConvNormAct units, with dropout after the first (the seed's conv blocks grow dropout with depth)."""

    def __init__(
        self, cin: int, cout: int, count: int = 2, kernel: Kernel = 3, dilation: Kernel = 1,
        activation: str = "relu", dropout: float = 0.0,
    ) -> None:
        layers: list[nn.Module] = []
        for i in range(count):
            layers.append(ConvNormAct(cin if i == 0 else cout, cout, kernel, dilation, activation))
            if i == 0 and dropout > 0:
                layers.append(Dropout(dropout))
        super().__init__(*layers)


def resize_to(x: Tensor, size: Sequence[int]) -> Tensor:
    """Bilinear resize of a feature map to `size` (H, W): aligns decoder maps with skips of any size."""
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)


def require_levels(section: ModelSection, key: str, value: int, minimum: int) -> None:
    """A network needs at least `minimum` levels (an encoder and a bottleneck at least)."""
    if value < minimum:
        raise ConfigError(f"{section.where(key)} = {value}: this model needs at least {minimum}; try {minimum}")


def check_unet_keys(section: ModelSection, levels: int, key: str = "num_layers") -> None:
    """The checks every UNet-shaped builder needs: enough levels, a size that halves cleanly, a known activation."""
    require_levels(section, key, levels, 2)
    require_divisible(section, levels - 1)
    make_activation(section.activation, section)  # fail early with the config location
