"""Small building blocks shared by several architectures."""
from __future__ import annotations

from torch import nn

from flexunet.config.schema import ModelSection
from flexunet.errors import ConfigError

_ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU, "elu": nn.ELU, "mish": nn.Mish, "gelu": nn.GELU, "silu": nn.SiLU, "swish": nn.SiLU,
    "selu": nn.SELU, "leaky_relu": nn.LeakyReLU, "leakyrelu": nn.LeakyReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid,
}


def make_activation(name: str, section: ModelSection | None = None) -> nn.Module:
    """An activation module by its Keras/PyTorch name (`relu`, `elu`, `mish`, `tf.nn.relu`, `ReLU`, ...)."""
    key = name.strip().lower().removeprefix("tf.nn.").removeprefix("tf.keras.activations.").removeprefix("keras.activations.")
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
