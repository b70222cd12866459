"""The names a config may use for models, losses and activations, and the [model] keys each architecture reads.

Config validates a file against these without importing the networks or the losses, which sit above it in the layer
order (docs/architecture.md). The registries must match: `models.register_model(name)` refuses a name that is not in
MODEL_KEYS, `losses.LOSSES` and `models.layers` are checked against LOSS_NAMES and ACTIVATIONS by
tests/unit/test_catalog.py, and tests/unit/test_model_keys.py checks that each builder reads exactly its keys.
"""
from __future__ import annotations

# [model] keys read for every architecture: the name, input and output shape, loss, metrics, optimiser settings and
# the encoder schedule (flexunet/train/param_groups.py; a ConfigError for a model without an encoder).
COMMON_MODEL_KEYS = frozenset(
    {
        "model", "generator", "image_width", "image_height", "image_channels", "num_classes", "loss", "metrics",
        "optimizer", "learning_rate", "weight_decay", "clipvalue", "pretrained_weights",
        "freeze_encoder", "unfreeze_encoder_after", "freeze_batch_norm", "encoder_lr_scale",
    }
)

_UNET_LIKE = frozenset({"base_filters", "num_layers", "activation"})
_SMP = frozenset({"encoder", "encoder_weights", "decoder_channels"})

# registry name -> the [model] keys its builder reads beyond COMMON_MODEL_KEYS (a key the user sets outside both
# gets a note at load). A new architecture adds its line here and one file in flexunet/models/.
MODEL_KEYS: dict[str, frozenset[str]] = {
    "flexunet": frozenset({"base_filters", "num_layers", "activation", "base_kernels", "dilation", "dropout_rate",
                           "normalization"}),
    "attention_unet": frozenset({"base_filters", "num_layers", "dropout_rate"}),
    "multires_unet": _UNET_LIKE,
    "u2net": _UNET_LIKE,
    "unet3plus": _UNET_LIKE | {"dropout_rate"},
    "sharp_unet": frozenset({"activation", "base_filters", "base_ksize", "dilation", "dropout_rate", "filters",
                             "max_filter"}),
    "swin_unet": frozenset({"depth", "dropout_rate", "filter_num_begin", "num_heads", "num_mlp", "patch_size",
                            "stack_num_down", "window_size"}),
    "trans_unet": frozenset({"activation", "backbone", "base_filters", "batch_norm", "dropout_rate", "embed_dim",
                             "filter_num", "mlp_activation", "num_heads", "num_mlp", "num_transformer", "pool",
                             "stack_num_down", "stack_num_up", "unpool"}),
    # segmentation-models-pytorch decoders on any smp/timm encoder (flexunet/models/smp_models.py)
    **{name: _SMP for name in ("unet", "unetplusplus", "fpn", "deeplabv3plus", "deeplabv3", "segformer", "upernet",
                               "manet")},
    "efficient_unet": frozenset({"efficientnet", "encoder_weights", "decoder_channels"}),
    "efficientnet_b7_unet": frozenset({"encoder_weights", "decoder_channels"}),
}

# Models whose level i drops dropout_rate * i, as the seed's did.
LEVEL_DROPOUT_MODELS = frozenset({"flexunet", "sharp_unet", "unet3plus"})

LOSS_NAMES = frozenset({"bce_iou_loss", "bce_dice_loss", "dice_loss", "iou_loss", "categorical_crossentropy",
                        "binary_crossentropy", "ssim_loss", "basnet_hybrid_loss", "dice_ce_loss"})
_LOSS_ALIASES = {"jacard_loss": "iou_loss", "sparse_categorical_crossentropy": "categorical_crossentropy"}

ACTIVATIONS = frozenset({"relu", "elu", "mish", "gelu", "silu", "swish", "selu", "leaky_relu", "leakyrelu", "tanh",
                         "sigmoid"})


def canonical_loss_name(name: str) -> str:
    """`Jacard_Loss`, `'iou_loss'` -> `iou_loss`: the LOSSES key a config's spelling means."""
    key = name.strip().strip("'\"").lower()
    return _LOSS_ALIASES.get(key, key)


def activation_key(name: str) -> str:
    """`tf.nn.relu`, `ReLU`, `keras.activations.elu` -> `relu`, `relu`, `elu`: the ACTIVATIONS name meant."""
    key = name.strip().lower()
    for prefix in ("tf.nn.", "tf.keras.activations.", "keras.activations."):
        key = key.removeprefix(prefix)
    return key
