"""Encoder vs decoder during training: [model] freeze_encoder (for unfreeze_encoder_after epochs, or the whole run),
freeze_batch_norm, and encoder_lr_scale (the encoder's learning rate relative to the rest).

The encoder is the model's `.encoder` (every smp architecture has one). Models without it refuse these keys.
"""
from __future__ import annotations

from torch import nn

from flexunet.config.schema import ModelSection
from flexunet.errors import ConfigError


def model_encoder(model: nn.Module) -> nn.Module | None:
    encoder = getattr(model, "encoder", None)
    return encoder if isinstance(encoder, nn.Module) else None


def check_encoder_keys(model: nn.Module, section: ModelSection) -> None:
    """ConfigError when an encoder key is set for a model that has no encoder (it would silently do nothing)."""
    if model_encoder(model) is not None:
        return
    set_keys = [key for key, off in (("freeze_encoder", False), ("freeze_batch_norm", False),
                                     ("unfreeze_encoder_after", None), ("encoder_lr_scale", 1.0))
                if getattr(section, key) != off]
    if set_keys:
        raise ConfigError(f"{section.where(set_keys[0])}: model {section.model!r} has no encoder; this key works "
                          "with the smp architectures (unet, fpn, deeplabv3plus, ...)")


def check_freezing_supported(section: ModelSection, distributed: bool) -> None:
    """Freezing changes which parameters get gradients after DistributedDataParallel has registered them: not
    supported under torchrun yet (encoder_lr_scale is)."""
    if distributed and (section.freeze_encoder or section.freeze_batch_norm):
        key = "freeze_encoder" if section.freeze_encoder else "freeze_batch_norm"
        raise ConfigError(f"{section.where(key)} = True: not supported with several processes (torchrun) yet; "
                          "train on one process, or leave the encoder unfrozen")


def parameter_groups(model: nn.Module, section: ModelSection) -> list[dict]:
    """Optimizer groups: everything but the encoder at learning_rate (group 0, the one logged), then the encoder at
    learning_rate x encoder_lr_scale. Frozen parameters are in their group too, so unfreezing needs no new
    optimizer (Adam skips a parameter without a gradient)."""
    check_encoder_keys(model, section)
    encoder = model_encoder(model)
    lr = section.learning_rate
    if encoder is None:
        return [{"params": list(model.parameters()), "lr": lr}]
    in_encoder = {id(p) for p in encoder.parameters()}
    rest = [p for p in model.parameters() if id(p) not in in_encoder]
    return [{"params": rest, "lr": lr}, {"params": list(encoder.parameters()), "lr": lr * section.encoder_lr_scale}]


def encoder_frozen(section: ModelSection, epoch: int) -> bool:
    """Whether the encoder's weights stay fixed in 0-based `epoch`."""
    after = section.unfreeze_encoder_after
    return section.freeze_encoder and (after is None or epoch < after)


def apply_encoder_schedule(model: nn.Module, section: ModelSection, epoch: int) -> str | None:
    """Freeze or unfreeze the encoder for 0-based `epoch`; returns a line to log when that changes something."""
    encoder = model_encoder(model)
    if encoder is None:
        return None
    if hasattr(model, "freeze_batch_norm"):  # EncoderSegmenter keeps those layers in eval mode under .train()
        setattr(model, "freeze_batch_norm", section.freeze_batch_norm)  # noqa: B010  (not a typed attribute)
    frozen = encoder_frozen(section, epoch)
    changed = False
    for module in encoder.modules():
        is_bn = isinstance(module, nn.modules.batchnorm._BatchNorm)
        for p in module.parameters(recurse=False):
            trainable = not frozen and not (is_bn and section.freeze_batch_norm)
            changed |= p.requires_grad != trainable
            p.requires_grad_(trainable)
    if not changed:
        return None
    return f"epoch {epoch + 1}: encoder {'frozen' if frozen else 'trains'}" + (
        " (BatchNorm layers stay frozen)" if section.freeze_batch_norm and not frozen else "")
