"""Seed-era spellings mapped to one flexunet name each.

Old configs run unmodified: a seed key, section or model class name is accepted and mapped here, with a one-line
note. Nothing after the config layer sees a seed spelling.
"""
from __future__ import annotations

# (section, seed key) -> key in the same section. "*" matches any section.
KEY_ALIASES: dict[tuple[str, str], str] = {
    ("train", "image_datapath"): "images_dir",
    ("train", "mask_datapath"): "masks_dir",
    ("valid", "image_datapath"): "images_dir",
    ("valid", "mask_datapath"): "masks_dir",
    ("test", "image_datapath"): "images_dir",
    ("test", "mask_datapath"): "masks_dir",
    ("infer", "image_datapath"): "images_dir",
    ("*", "alpah"): "alpha",  # the seed reads this misspelling in [augmentor] and [deformation]
    ("mask", "mask_datatyoe"): "mask_datatype",
    ("model", "show_hitory"): "show_history",
    ("train", "epoch_changeinfer"): "epoch_change_infer",
    ("train", "epoch_changeinfer_dir"): "epoch_change_infer_dir",
    ("train", "reduer_patience"): "reducer_patience",
    ("tiledinfer", "overlappging"): "overlapping",
    ("infer", "mages_dir"): "images_dir",
    ("train", "mages_dir"): "images_dir",
    ("model", "batchnorm"): "batch_norm",
    ("model", "freeze_backbone"): "freeze_encoder",
}

# [model] keys that mean the same thing in two seed models, each spelled its own way (UNet normalization, TransUNet
# batch_norm; UNet base_kernels, SharpUNet base_ksize; SharpUNet filters, TransUNet filter_num). Each stays its own
# key; setting one the chosen model does not read gets a note naming the spelling it does read.
MODEL_KEY_SYNONYMS: dict[str, str] = {
    "normalization": "batch_norm", "batch_norm": "normalization",
    "base_kernels": "base_ksize", "base_ksize": "base_kernels",
    "filters": "filter_num", "filter_num": "filters",
}

# In the seed, [eval] holds the validation data (P/S) or the evaluation batch size and log folder (F).
# Its data keys move to [valid]; the rest stay in [eval]. One beside a different explicit [valid] value is an error
# (either silently winning could validate on the wrong set).
EVAL_DATA_KEYS = ("images_dir", "masks_dir", "image_datapath", "mask_datapath")

# Keys the seed reads but that change nothing here, with the reason shown to the user.
NOTE_ONLY_KEYS: dict[tuple[str, str], str] = {
    ("model", "show_history"): "history is always written to eval_dir/history.csv",
    ("model", "dropout_seed_fixing"): "use --seed (or [train] seed) for reproducible runs",
    ("model", "color_order"): "read from [image] color_order",
    ("model", "image_depth"): "3-D models are not supported; the seed's 3-D UNet was never wired to data",
    ("model", "final_activation"): "binary models always end in a sigmoid, applied to the logits by the loss",
    ("model", "show_summary"): "use `flexunet inspect CONFIG` for the layer table, parameters and FLOPs",
    ("model", "shift_window"): "SwinUNETR shifts windows in every other block",
    ("model", "weights"): "use [model] encoder_weights (smp architectures) or pretrained_weights (a local file)",
    ("generator", "base_dir"): "dataset generation is `flexunet prepare herlev RAW_DIR OUT_DIR`",
    ("generator", "output_dir"): "dataset generation is `flexunet prepare herlev RAW_DIR OUT_DIR`",
    ("generator", "resize"): "dataset generation is `flexunet prepare herlev RAW_DIR OUT_DIR --canvas N`",
    ("generator", "cropsize"): "dataset generation is `flexunet prepare herlev RAW_DIR OUT_DIR --crop N`",
    ("generator", "seamless_cloning"): "dataset generation is `flexunet prepare herlev RAW_DIR OUT_DIR --seamless`",
    ("model", "input_normalize"): "inputs are always scaled to [0, 1] (the seed fed raw 0-255 values when False)",
    ("dataset", "class_name"): "one dataset class reads binary and colour-mapped masks",
    ("dataset", "datasetclass"): "one dataset class reads binary and colour-mapped masks",
    ("dataset", "resize_interpolation"):
        "images are resized bilinearly and masks with nearest, in training and inference",
    ("datasetclass", "datasetclass"): "one dataset class reads binary and colour-mapped masks",
    ("train", "save_weights_only"): "checkpoints always hold weights plus the config, loaded with weights_only",
    ("train", "seedreset_callback"): "dropout is seeded once per run with --seed",
    ("train", "show_history"): "history is always written to eval_dir/history.csv",
    ("train", "dataset_splitter"): "without [valid], validation_split of the training pairs is held out",
    ("train", "create_backup"): "an earlier run is always moved aside to <dir>_<time>_bak, never deleted",
    ("eval", "output_dir"): "the seed never read it either",
    ("mask", "binarize"): "binary masks are always thresholded at [mask] threshold (JPEG masks are lossy)",
    ("mask", "mask_datatype"): "masks are decoded from their colours; the seed stored this key and never used it",
    ("generator", "debug"): "use `flexunet augment CONFIG --preview N` to look at augmented samples",
    ("generator", "verbose"): "progress is shown with progress bars",
    ("generator", "generated_images_dir"): "use `flexunet augment CONFIG --preview N` to look at augmented samples",
    ("generator", "generated_masks_dir"): "use `flexunet augment CONFIG --preview N` to look at augmented samples",
    ("debug", "verbose"): "use --debug on the command line",
    ("distortion", "gaussian_filter_sigma"): "the seed read it and never used it",
}

# Seed class names -> registry names (see flexunet.models). The seed's DeepLabV3+ and EfficientNet UNets are smp
# builds with the seed's encoder (flexunet/models/smp_models.py); "unet" is smp's UNet, the seed's is "flexunet".
MODEL_ALIASES: dict[str, str] = {
    "tensorflowflexunet": "flexunet",
    "tensorflowunet": "flexunet",
    "tensorflowslightlyflexibleunet": "flexunet",
    "flexunet": "flexunet",
    "tensorflowflexattentionunet": "attention_unet",
    "tensorflowattentionunet": "attention_unet",
    "tensorflowflexmultiresunet": "multires_unet",
    "tensorflowmultiresunet": "multires_unet",
    "tensorflowflexunet3plus": "unet3plus",
    "tensorflowunet3plus": "unet3plus",
    "tensorflowflexu2net": "u2net",
    "tensorflowu2net": "u2net",
    "tensorflowflexswinunet": "swin_unet",
    "tensorflowswinunet": "swin_unet",
    "tensorflowflextransunet": "trans_unet",
    "tensorflowtransunet": "trans_unet",
    "tensorflowflexdeeplabv3plus": "deeplabv3plus",
    "tensorflowflexsharpunet": "sharp_unet",
    "tensorflowflexefficientunet": "efficient_unet",
    "tensorflowefficientunet": "efficient_unet",
    "tensorflowflexefficientnetb7unet": "efficientnet_b7_unet",
}


def canonical_model_name(name: str) -> str:
    """The registry name for a model given by its seed class name or its own name (case-insensitive)."""
    key = name.strip().lower()
    return MODEL_ALIASES.get(key, key)
