"""The sections about labels: how masks are decoded ([mask], [maskcolor], [segmentation]) and what is done to predicted
masks ([postprocess])."""
from __future__ import annotations

from typing import Any, ClassVar, Literal, Optional

from pydantic import ConfigDict, Field, ValidationInfo, field_validator

from flexunet.config.section import RGB, Section

# Default colour map of the seed's categorized masks ([mask] rgb_map).
DEFAULT_RGB_MAP: dict[RGB, int] = {(0, 0, 0): 0, (0, 255, 0): 1, (255, 0, 0): 2, (0, 0, 255): 3}


class SegmentationSection(Section):
    """[segmentation]: how binary masks and overlays are coloured."""

    colorize: bool = False
    black: str = "black"
    white: str = "white"
    blursize: Optional[tuple[int, int]] = None  # blur the input image before the overlay (seed behaviour)


class MaskSection(Section):
    """[mask]: how mask files become label maps."""

    threshold: int = Field(127, ge=0, le=255)  # grey level separating foreground (binary masks)
    blur: bool = False  # smooth the mask before thresholding (the seed blurred after, dilating by 1 px)
    blur_size: tuple[int, int] = (3, 3)
    algorithm: Optional[
        Literal["cv2.THRESH_OTSU", "cv2.THRESH_TRIANGLE", "cv2.THRESH_BINARY", "cv2.THRESH_TRUNC"]
    ] = None
    mask_file_format: Optional[str] = None  # e.g. ".png": only masks with this extension are read
    mask_suffix: str = ""  # mask stem = image stem + suffix, e.g. "_segmentation" (ISIC)
    # "instances": masks are instance labels (8/16-bit, 0 = background, one id per object); any id > 0 is foreground
    # (binary models). "semantic": grey threshold, class indices or rgb_map colours.
    kind: Literal["semantic", "instances"] = "semantic"
    rgb_map: Optional[dict[RGB, int]] = None  # colour -> class index; None -> seed default for num_classes > 1
    color_tolerance: float = Field(40.0, ge=0)  # RGB distance beyond which a pixel counts as unmapped
    # One name per label, background first (label 0, 1, ...): shown in the console, CSV/JSON headers and report.html.
    # None -> "class_1", "class_2", ... for the foreground labels.
    class_names: Optional[list[str]] = None

    @field_validator("class_names")
    @classmethod
    def _valid_names(cls, value: Optional[list[str]]) -> Optional[list[str]]:
        if value is None:
            return value
        for name in value:
            if not name.strip() or any(c in name for c in ',"\n\r'):
                raise ValueError(f"name {name!r} must be non-empty, without commas, quotes or line breaks "
                                 "(it heads CSV columns)")
        if len(set(value)) != len(value):
            raise ValueError("names must be different from each other")
        return value
    # A label (>= num_classes, <= 255) marking pixels left out of loss and metrics, e.g. 255 for "unsure" regions.
    ignore_index: Optional[int] = Field(None, ge=0, le=255)

    @field_validator("rgb_map")
    @classmethod
    def _valid_map(cls, value: Optional[dict[RGB, int]]) -> Optional[dict[RGB, int]]:
        if value is None:
            return value
        if not value:
            raise ValueError("maps no colour; give at least {(0,0,0): 0, ...} or leave it out for the default")
        for colour, index in value.items():
            if any(c < 0 or c > 255 for c in colour):
                raise ValueError(f"colour {colour} has a channel outside 0..255")
            if index < 0:
                raise ValueError(f"class index {index} of {colour} is negative")
        return value


class PostprocessSection(Section):
    """[postprocess]: what is done to each predicted class's mask after thresholding (evaluate, infer, tiled infer
    and the Python API alike), and how its objects are counted. Off by default: a config without it gives the same
    masks as before. Each per-class key takes one value for every foreground class, or a dict by [mask] class_names,
    e.g. min_object_px = {"nucleus": 30, "cytoplasm": 200} (a class left out of the dict is left as it is)."""

    min_object_px: int | dict[str, int] = 0  # objects (8-connected) of fewer pixels are removed
    min_object_fraction: float | dict[str, float] = 0.0  # ... or of less than this fraction of the image, in [0, 1)
    fill_holes: bool | dict[str, bool] = False  # background enclosed by the class becomes the class
    keep_largest: bool | dict[str, bool] = False  # keep only the largest object (one lesion per image)
    # how objects are told apart: "none" = connected components; "watershed" splits touching objects at the necks
    separate: Literal["none", "watershed"] | dict[str, Literal["none", "watershed"]] = "none"
    min_distance: int | dict[str, int] = 5  # watershed: fewest pixels between two object centres (>= 1)
    compactness: float | dict[str, float] = 0.0  # watershed: > 0 gives rounder, more even objects
    # choose a binary model's threshold and min_object_px / fill_holes / keep_largest per class by validation Dice
    # after training (after --folds: on the out-of-fold predictions); saved as model_dir/postprocess.json with the
    # before/after Dice; evaluate and infer then read that choice
    auto: bool = False

    PER_CLASS: ClassVar[tuple[str, ...]] = (
        "min_object_px", "min_object_fraction", "fill_holes", "keep_largest", "separate", "min_distance", "compactness",
    )

    @field_validator("min_object_px", "min_object_fraction", "compactness", "min_distance")
    @classmethod
    def _not_negative(cls, value: object, info: ValidationInfo) -> object:
        values = value.values() if isinstance(value, dict) else [value]
        low = 1 if info.field_name == "min_distance" else 0
        for each in values:
            if isinstance(each, (int, float)) and each < low:
                raise ValueError(f"must be >= {low}")
        if info.field_name == "min_object_fraction" and any(isinstance(v, float) and v >= 1 for v in values):
            raise ValueError("is a fraction of the image: must be < 1")
        return value

    def for_class(self, key: str, name: str) -> Any:
        """The value of per-class `key` for class `name`: the scalar, the dict's entry, or the key's default."""
        value = getattr(self, key)
        if isinstance(value, dict):
            return value.get(name, type(self).model_fields[key].default)
        return value

    def class_keys(self) -> dict[str, list[str]]:
        """Per-class key -> the class names its dict names (empty for scalars), for the check against class_names."""
        return {key: list(getattr(self, key)) for key in self.PER_CLASS if isinstance(getattr(self, key), dict)}


class MaskcolorSection(Section):
    """[maskcolor]: one RGB colour per Herlev category (dataset generator)."""

    model_config = ConfigDict(extra="allow", frozen=True)
