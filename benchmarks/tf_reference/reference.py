"""The seed's Pap-Smear UNet, bce_iou_loss and training step in TensorFlow/Keras, written from the spec (§2.1, §3, §4).

Benchmark-only: runs in the TF virtual environment (benchmarks/tf_reference/setup_venv.sh), never imported by
flexunet. Topology (spec §2.1, the P `TensorflowUNet`): input /255, encoder levels i = 0..L-1 of
Conv(F_i, k_i, relu, he_normal) -> Dropout(rate*i) -> Conv, MaxPool 2x2 between levels; decoder levels f = L-2..0 of
Conv2DTranspose(F_f, 2, stride 2) -> concat(skip) -> Conv -> Dropout(rate*f) -> Conv; 1x1 Conv + sigmoid.
Pap-Smear config: 16 filters, 7 levels, 3x3, dropout 0.07, 1 class -> 31,110,001 parameters (checked by `check()`).
Optimizer: Adam(1e-4, clipvalue 0.5) (Keras epsilon 1e-7); batch 4.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

PAP_SMEAR = {"size": 128, "channels": 3, "num_classes": 1, "base_filters": 16, "num_layers": 7, "base_kernels": 3,
             "dropout_rate": 0.07, "learning_rate": 1e-4, "clipvalue": 0.5, "batch_size": 4}
PAP_SMEAR_PARAMETERS = 31_110_001


def set_threads(threads: int) -> None:
    """Must run before TensorFlow creates its thread pools (i.e. before any op)."""
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(min(threads, 2))


def build_unet(size: int = 128, channels: int = 3, num_classes: int = 1, base_filters: int = 16, num_layers: int = 7,
               base_kernels: int = 3, dropout_rate: float = 0.07, **_: object):
    """The seed's UNet (spec §2.1), dilation 1, no batch norm, relu; returns an uncompiled keras.Model."""
    import keras
    from keras import layers

    kernels = [base_kernels]
    for _ in range(num_layers - 1):
        kernels.append(max(3, kernels[-1] - 2))
    inputs = keras.Input((size, size, channels))
    x = layers.Rescaling(1.0 / 255)(inputs)  # the seed's Lambda(x / 255)

    def conv(f: int, k: int):
        return layers.Conv2D(f, (k, k), activation="relu", kernel_initializer="he_normal", padding="same")

    skips = []
    for i in range(num_layers):
        f = base_filters * 2**i
        x = conv(f, kernels[i])(x)
        x = layers.Dropout(dropout_rate * i)(x)
        x = conv(f, kernels[i])(x)
        if i < num_layers - 1:
            skips.append(x)
            x = layers.MaxPooling2D((2, 2))(x)
    for f_level in range(num_layers - 2, -1, -1):
        f = base_filters * 2**f_level
        x = layers.Conv2DTranspose(f, (2, 2), strides=(2, 2), padding="same")(x)
        x = layers.concatenate([x, skips.pop()])
        x = conv(f, kernels[f_level])(x)
        x = layers.Dropout(dropout_rate * f_level)(x)
        x = conv(f, kernels[f_level])(x)
    outputs = layers.Conv2D(num_classes, (1, 1), activation="sigmoid")(x)
    return keras.Model(inputs, outputs, name="seed_unet")


def iou_coef(y_true, y_pred):
    """Spec §3: sum(t*p) / sum(t + p - t*p) over the whole batch tensor."""
    import tensorflow as tf

    t = tf.cast(tf.reshape(y_true, [-1]), tf.float32)
    p = tf.cast(tf.reshape(y_pred, [-1]), tf.float32)
    inter = tf.reduce_sum(t * p)
    return inter / tf.reduce_sum(t + p - t * p)


def bce_iou_loss(y_true, y_pred):
    """Spec §3: (binary_crossentropy (probabilities, mean) + (1 - iou_coef)) / 2."""
    import keras
    import tensorflow as tf

    bce = tf.reduce_mean(keras.losses.binary_crossentropy(tf.cast(y_true, tf.float32), y_pred))
    return (bce + (1.0 - iou_coef(y_true, y_pred))) / 2.0


def compiled_model(cfg: dict = PAP_SMEAR):
    """Model compiled as the seed: Adam(lr, clipvalue), bce_iou_loss, iou_coef metric."""
    import keras

    model = build_unet(**cfg)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=cfg["learning_rate"], clipvalue=cfg["clipvalue"]),
                  loss=bce_iou_loss, metrics=[iou_coef])
    return model


def check(model=None) -> int:
    """Parameter count of the Pap-Smear network; raises unless it is the seed's 31,110,001."""
    model = model or build_unet(**PAP_SMEAR)
    n = int(model.count_params())
    if n != PAP_SMEAR_PARAMETERS:
        raise AssertionError(f"TF reference has {n:,} parameters, the seed's Pap-Smear UNet has {PAP_SMEAR_PARAMETERS:,}")
    return n


# ---- the reference's own data pipeline: PIL decode into in-memory arrays, as the seed's ImageMaskDataset -------------

def read_image(path: Path, size: int = 128) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        im = im.convert("RGB")
        if im.size != (size, size):
            im = im.resize((size, size), Image.NEAREST)
        return np.asarray(im, dtype=np.uint8)


def read_mask(path: Path, size: int = 128, threshold: int = 60) -> np.ndarray:
    """Grey mask -> 3x3 box blur -> > threshold, as float32 (H, W, 1).

    The same labels as flexunet's [mask] blur/threshold decoding, so both sides learn the same targets (the seed
    thresholded first and blurred after, which dilated masks by a pixel; that difference is not reproduced here).
    """
    from PIL import Image

    with Image.open(path) as im:
        im = im.convert("L")
        if im.size != (size, size):
            im = im.resize((size, size), Image.NEAREST)
        grey = np.asarray(im, dtype=np.float32)
    padded = np.pad(grey, 1, mode="reflect")  # cv2.blur's default border (BORDER_REFLECT_101)
    h, w = grey.shape
    blurred = sum(padded[dy:dy + h, dx:dx + w] for dy in range(3) for dx in range(3)) / 9.0
    blurred = np.floor(blurred + 0.5)  # cv2.blur rounds to uint8
    return (blurred > threshold).astype(np.float32)[:, :, None]


def load_pairs(pairs: list[tuple[Path, Path]], size: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """X uint8 (N, H, W, 3), Y float32 (N, H, W, 1)."""
    x = np.stack([read_image(i, size) for i, _ in pairs]) if pairs else np.zeros((0, size, size, 3), np.uint8)
    y = np.stack([read_mask(m, size) for _, m in pairs]) if pairs else np.zeros((0, size, size, 1), np.float32)
    return x, y


def list_pairs(root: Path, splits: dict[str, str] | None = None, want: str | None = None) -> list[tuple[Path, Path]]:
    """(image, mask) pairs of <root>/{train,valid,test}/images (masks same name), sorted by stem; optionally only the
    stems that the split list `splits` (stem -> split) assigns to `want`."""
    out = []
    for sub in ("train", "valid", "test"):
        images = root / sub / "images"
        if not images.is_dir():
            continue
        for image in sorted(images.iterdir()):
            mask = root / sub / "masks" / image.name
            if image.suffix.lower() in (".jpg", ".png") and mask.is_file():
                if splits is None or splits.get(image.stem) == want:
                    out.append((image, mask))
    return sorted(out, key=lambda p: p[0].stem)


def peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
