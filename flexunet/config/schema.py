"""One pydantic model per INI section: the only place where keys, types, defaults and meanings live."""
from __future__ import annotations

import re
from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, field_validator

from flexunet.config.augmentation import (
    AugmentorSection,
    BarrdistortionSection,
    BrighteningSection,
    DeformationSection,
    DistortionSection,
    GeneratorSection,
    PincdistortionSection,
    SharpeningSection,
)
from flexunet.config.masks import (
    DEFAULT_RGB_MAP,
    MaskcolorSection,
    MaskSection,
    PostprocessSection,
    SegmentationSection,
)
from flexunet.config.section import DEFAULT_MAX_PIXELS, RGB, TILED_MAX_PIXELS, Section


class ModelSection(Section):
    """[model]: which network, its shape, its loss and the optimiser settings."""

    model: str = "TensorFlowFlexUNet"
    generator: bool = False  # train with online augmentation ([augmentor])
    image_width: int = Field(512, gt=0)
    image_height: int = Field(512, gt=0)
    image_channels: int = Field(3, gt=0)
    num_classes: int = Field(1, gt=0)
    base_filters: int = Field(16, gt=0)
    num_layers: int = Field(6, ge=1, le=10)
    base_kernels: tuple[int, int] = (3, 3)
    dilation: tuple[int, int] = (1, 1)
    dropout_rate: float = Field(0.05, ge=0.0, lt=1.0)
    normalization: bool = False  # BatchNorm after every conv
    activation: str = "relu"
    optimizer: Literal["Adam", "AdamW", "adam", "adamw"] = "Adam"
    learning_rate: float = Field(1e-4, gt=0)
    weight_decay: Optional[float] = Field(None, ge=0)  # AdamW only; None -> 0.004 (Keras' AdamW default)
    clipvalue: Optional[float] = Field(0.2, ge=0)  # gradient value clipping; 0 or None turns it off
    loss: Optional[str] = None  # None -> categorical_crossentropy (num_classes > 1) or bce_iou_loss
    metrics: list[str] = Field(default_factory=lambda: ["dice_coef_multiclass"])
    pretrained_weights: Optional[str] = None  # local .pt file of the whole model; nothing is downloaded
    # smp architectures (unet, unetplusplus, fpn, deeplabv3plus, ...: flexunet/models/smp_models.py)
    encoder: Optional[str] = None  # any smp encoder ("resnet34", "efficientnet-b0") or timm's with "tu-"; None ->
    # the architecture's default (resnet50 for deeplabv3plus, resnet34 otherwise)
    # None: random weights; a tag smp/timm knows ("imagenet": downloaded by their hub code); or a local file
    # (.pth/.pt/.safetensors) of the encoder's weights, every tensor checked
    encoder_weights: Optional[str] = None
    # the widest decoder width (None: smp's, 256); unet/unetplusplus halve it at each of their 5 stages (down to
    # 16), fpn's segmentation head is half of it (a multiple of 32, at least 32)
    decoder_channels: Optional[int] = Field(None, ge=16)
    # training of models with an encoder (smp architectures): the encoder's parameters stay fixed ...
    freeze_encoder: bool = False
    unfreeze_encoder_after: Optional[int] = Field(None, ge=0)  # ... for this many epochs (None: the whole run)
    freeze_batch_norm: bool = False  # the encoder's BatchNorm layers keep their statistics and affine weights
    encoder_lr_scale: float = Field(1.0, gt=0)  # the encoder's learning rate = learning_rate x this
    # Keys of the other architectures (see `flexunet.models`); each builder reads the ones it needs.
    efficientnet: str = "B0"
    filters: Optional[list[int]] = None
    max_filter: int = 512
    base_ksize: tuple[int, int] = (3, 3)
    filter_num_begin: int = Field(96, gt=0)  # Swin: the seed's 128 is not a multiple of 12, as SwinUNETR needs
    depth: int = 4
    stack_num_down: int = 2
    stack_num_up: int = 2
    patch_size: tuple[int, int] = (2, 2)  # Swin: SwinUNETR embeds 2x2 patches (the seed used (4, 4))
    num_heads: Optional[int | list[int]] = None
    window_size: Optional[int | list[int]] = None
    num_mlp: Optional[int] = None
    filter_num: Optional[list[int]] = None
    embed_dim: int = 768
    num_transformer: int = 12
    mlp_activation: str = "GELU"
    batch_norm: bool = False
    pool: bool = True
    unpool: Optional[bool] = None
    backbone: Optional[str] = None

    @field_validator("base_kernels", "dilation", "base_ksize")
    @classmethod
    def _positive_square(cls, value: tuple[int, int]) -> tuple[int, int]:
        if value[0] < 1 or value[1] < 1:
            raise ValueError("both entries must be >= 1")
        return value


class DatasetSection(Section):
    """[dataset]: the seed chose a dataset class here; flexunet has one."""


class DatasetclassSection(Section):
    """[datasetclass]: read by the seed's S evaluator only."""


_DURATION = re.compile(r"^\s*(?:(\d+(?:\.\d+)?)\s*h)?\s*(?:(\d+(?:\.\d+)?)\s*m(?:in)?)?\s*(?:(\d+(?:\.\d+)?)\s*s)?\s*$")


def duration_seconds(value: str | float) -> float:
    """"20m", "1h30m", "90s", "1.5h" or a number of seconds -> seconds; ValueError when it is none of them."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    elif re.fullmatch(r"\s*\d+(?:\.\d+)?\s*", str(value)):
        seconds = float(value)
    else:
        found = _DURATION.match(str(value))
        if not found or not any(found.groups()):
            raise ValueError(f"{value!r} is not a duration; write e.g. \"20m\", \"1h30m\" or \"90s\"")
        hours, minutes, secs = (float(g) if g else 0.0 for g in found.groups())
        seconds = hours * 3600 + minutes * 60 + secs
    if not 0 < seconds < 366 * 86400:
        raise ValueError(f"{value!r}: a time budget must be more than 0 seconds and under a year")
    return seconds


class TrainSection(Section):
    """[train]: data, how long to train, when to stop, where results go."""

    epochs: int = Field(100, ge=0)
    batch_size: int = Field(4, gt=0)
    patience: int = 10  # EarlyStopping on the monitored value; <= 0 turns it off
    metrics: list[str] = Field(default_factory=list)  # the two columns of train_metrics.csv
    model_dir: str = "./models"
    eval_dir: str = "./eval"
    images_dir: Optional[str] = None
    masks_dir: Optional[str] = None
    split_file: Optional[str] = None  # CSV from `flexunet split`: keep only the stems listed for this section
    learning_rate_reducer: bool = False
    reducer_patience: int = Field(4, ge=0)
    reducer_factor: float = Field(0.4, gt=0, lt=1)
    min_lr: float = Field(0.0, ge=0)
    steps_per_epoch: Optional[int] = Field(None, gt=0)
    validation_steps: Optional[int] = Field(None, gt=0)
    epoch_change_infer: bool = True
    epoch_change_infer_dir: str = "./epoch_change_infer"
    epoch_change_tiled_infer: bool = False
    epoch_change_tiled_infer_dir: str = "./epoch_change_tiled_infer"
    num_infer_images: int = Field(6, ge=0)
    seed: int = Field(137, ge=0, lt=2**32)  # NumPy and torch take seeds below 2**32 / 2**64
    monitor: Literal["val_loss", "val_dice", "val_iou"] = "val_loss"
    validation_split: float = Field(0.2, gt=0, lt=1)  # used only when there is no [valid] data
    num_workers: Optional[int] = Field(None, ge=0)  # None -> 0 on CPU, 4 on CUDA
    cache: bool = False  # keep decoded pairs in RAM after the first epoch
    amp: bool = True  # mixed precision on CUDA (bf16 where supported); on CPU only with cpu_bf16
    # bf16 autocast on CPUs with bf16 instructions (avx512_bf16 / AMX); fp32 with a note elsewhere
    cpu_bf16: bool = False
    channels_last: Optional[bool] = None  # None -> on for CUDA, off for CPU
    # also log history, lr and previews to eval_dir/tensorboard (needs the tensorboard package)
    tensorboard: bool = False
    # "20m", "1h30m", "90s": training ends inside it, its learning rate annealed to the deadline (train/budget.py)
    time_budget: Optional[str] = None
    # K-fold cross-validation over [train] + [valid] by source group: model_dir/fold_<k>/ per fold (train/folds.py)
    folds: Optional[int] = Field(None, ge=2, le=100)

    @field_validator("time_budget", mode="before")
    @classmethod
    def _duration(cls, value: object) -> object:
        if value is None:
            return None
        duration_seconds(value)  # type: ignore[arg-type]  # checked here: a bad value is a config error at load
        return str(value)

    @property
    def time_budget_s(self) -> float | None:
        return duration_seconds(self.time_budget) if self.time_budget else None


class DataDirsSection(Section):
    """A folder of images and a folder of masks."""

    images_dir: Optional[str] = None
    masks_dir: Optional[str] = None
    split_file: Optional[str] = None  # CSV from `flexunet split`: keep only the stems listed for this section


class ValidSection(DataDirsSection):
    """[valid] (seed [eval] too): validation data for model selection during training."""


class TestSection(DataDirsSection):
    """[test]: held-out data for `flexunet evaluate`."""


class EvalSection(Section):
    """[eval]: evaluation batch size (its seed data keys move to [valid])."""

    batch_size: int = Field(4, gt=0)
    eval_dir: Optional[str] = None  # the seed's F callback wrote its CSVs here; used if [train] has none
    tta: bool = False  # average predictions over flips


class InferSection(Section):
    """[infer]: a folder of images to segment, where masks and overlays go."""

    images_dir: Optional[str] = None
    output_dir: str = "./mini_test_output"
    merged_dir: Optional[str] = None
    threshold: float = Field(0.5, gt=0, lt=1)  # foreground probability for binary models
    overlay_alpha: float = Field(0.4, ge=0, le=1)
    batch_size: int = Field(4, gt=0)
    tta: bool = False
    compile: bool = False  # torch.compile (inductor, frozen weights): faster after ~10 s of compiling


class TiledinferSection(Section):
    """[tiledinfer]: sliding-window inference of large images."""

    images_dir: Optional[str] = None
    output_dir: str = "./tiled_mini_test_output"
    merged_dir: Optional[str] = None
    overlapping: Optional[int] = Field(None, ge=0)  # None -> a quarter of the tile, at most 64 px
    split_size: Optional[int] = Field(None, gt=0)  # None -> the model's input size
    background: int = Field(0, ge=0, le=255)
    bitwise_blending: bool = False
    debug: bool = False


class ImageSection(Section):
    """[image]: channel order fed to the network, and the largest image read."""

    color_order: Literal["RGB", "BGR"] = "RGB"
    # Images and masks whose header claims more pixels are reported and skipped, never decoded (decompression bombs).
    max_pixels: Optional[int] = Field(None, gt=0)  # None -> 8000**2, or 20000**2 for `infer --tiled`

    def pixel_limit(self, tiled: bool = False) -> int:
        """max_pixels, or its default: tiled inference holds only tiles at model size, so it reads larger images."""
        return self.max_pixels or (TILED_MAX_PIXELS if tiled else DEFAULT_MAX_PIXELS)


class InspectSection(Section):
    """[inspect]: where `flexunet inspect` writes the graph and summary."""

    model_graph: str = "./model.png"
    summary: str = "./summary.txt"


class DebugSection(Section):
    """[debug]: seed verbosity switch."""


SECTIONS: dict[str, type[Section]] = {
    cls.section_name(): cls
    for cls in (
        ModelSection, DatasetSection, DatasetclassSection, TrainSection, ValidSection, EvalSection, TestSection,
        InferSection, TiledinferSection, SegmentationSection, MaskSection, PostprocessSection, ImageSection,
        GeneratorSection, AugmentorSection, DeformationSection, DistortionSection, SharpeningSection,
        BrighteningSection, BarrdistortionSection, PincdistortionSection, InspectSection, DebugSection,
        MaskcolorSection,
    )
}


class Resolved(BaseModel):
    """Seed-era choices that depend on which keys the user set, made once by config/load.py, so the stages after
    it read plain values (the defaults are what a Config built in code, with nothing set, means)."""

    model_config = ConfigDict(frozen=True)
    # The run's eval folder: [eval] eval_dir when it is given and [train] eval_dir is not (the seed's F), else [train].
    eval_dir_section: Literal["train", "eval"] = "train"
    # Elastic deformation: [deformation] alpha with its sigmoids; "deformation_sigmoid" when [deformation] sigmoid is
    # set without sigmoids; "augmentor" when the seed's S switched it on with [augmentor] transformer and no
    # [deformation] key (its alpha and sigmoid are then read from [augmentor]).
    elastic: Literal["deformation", "deformation_sigmoid", "augmentor"] = "deformation"
    # Overlay folder per inference section ("infer", "tiledinfer") whose output_dir came from the command line while
    # its merged_dir did not: `<output_dir>_merged`, so two passes with two --output never share overlays.
    merged_dirs: dict[str, str] = Field(default_factory=dict)
    # "section.key" of every --set option, in order (the `flexunet doctor` command that evaluation suggests repeats
    # the data ones).
    command_line_keys: tuple[str, ...] = ()


class Config(BaseModel):
    """A whole validated config: one attribute per section, plus where it came from."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)
    model: ModelSection = ModelSection()
    dataset: DatasetSection = DatasetSection()
    datasetclass: DatasetclassSection = DatasetclassSection()
    train: TrainSection = TrainSection()
    valid: ValidSection = ValidSection()
    eval: EvalSection = EvalSection()
    test: TestSection = TestSection()
    infer: InferSection = InferSection()
    tiledinfer: TiledinferSection = TiledinferSection()
    segmentation: SegmentationSection = SegmentationSection()
    mask: MaskSection = MaskSection()
    postprocess: PostprocessSection = PostprocessSection()
    image: ImageSection = ImageSection()
    generator: GeneratorSection = GeneratorSection()
    augmentor: AugmentorSection = AugmentorSection()
    deformation: DeformationSection = DeformationSection()
    distortion: DistortionSection = DistortionSection()
    sharpening: SharpeningSection = SharpeningSection()
    brightening: BrighteningSection = BrighteningSection()
    barrdistortion: BarrdistortionSection = BarrdistortionSection()
    pincdistortion: PincdistortionSection = PincdistortionSection()
    inspect: InspectSection = InspectSection()
    debug: DebugSection = DebugSection()
    maskcolor: MaskcolorSection = MaskcolorSection()
    # Where the config came from: the file (None when built in code), notes shown to the user, and for every
    # key set by the user its origin ("file" or "command line"); keys absent there hold their defaults.
    source: Optional[str] = None
    notes: tuple[str, ...] = ()
    origins: dict[str, str] = Field(default_factory=dict)
    resolved: Resolved = Resolved()

    @property
    def rgb_map(self) -> dict[RGB, int]:
        """Colour -> class map for multi-class masks: [mask] rgb_map, or the seed default cut to num_classes."""
        if self.mask.rgb_map is not None:
            return dict(self.mask.rgb_map)
        return {c: i for c, i in DEFAULT_RGB_MAP.items() if i < max(self.model.num_classes, 2)}

    @property
    def label_names(self) -> list[str]:
        """Name of every label, background (0) first: [mask] class_names, or background, class_1, class_2, ..."""
        if self.mask.class_names is not None:
            return list(self.mask.class_names)
        return ["background"] + [f"class_{i}" for i in range(1, max(self.model.num_classes, 2))]
