"""The base of every config section (frozen, unknown keys refused, able to name a key's origin) and the values sections
share: path keys, pixel limits, weight-file suffixes."""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict, PrivateAttr

RGB = tuple[int, int, int]


# Default pixel limits of [image] max_pixels: training, evaluation and plain inference; tiled inference.
DEFAULT_MAX_PIXELS = 8000 * 8000


TILED_MAX_PIXELS = 20000 * 20000


# Keys holding a path, a folder or a glob pattern: resolved against the config file's folder at load time.
PATH_KEYS = frozenset(
    {
        "images_dir", "masks_dir", "model_dir", "eval_dir", "output_dir", "merged_dir",
        "epoch_change_infer_dir", "epoch_change_tiled_infer_dir", "model_graph", "summary",
        "pretrained_weights", "base_dir", "split_file",
    }
)


WEIGHT_FILE_SUFFIXES = (".pth", ".pt", ".safetensors", ".bin")


def looks_like_file(value: str) -> bool:
    """[model] encoder_weights names a local file (a weights suffix or a folder in it), not a tag like "imagenet"."""
    return value.lower().endswith(WEIGHT_FILE_SUFFIXES) or "/" in value or "\\" in value


class Section(BaseModel):
    """Base of every section: frozen, unknown keys forbidden, and able to say where a key came from."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)
    _source: str = PrivateAttr(default="<config>")

    @classmethod
    def section_name(cls) -> str:
        return cls.__name__.removesuffix("Section").lower()

    def where(self, key: str) -> str:
        """`pap.config [model] image_height`: the prefix of every error about this key."""
        return f"{self._source} [{self.section_name()}] {key}"
