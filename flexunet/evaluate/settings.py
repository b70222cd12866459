"""What evaluation reads from the config, resolved once by the entry point and passed down with the LabelSpace."""
from __future__ import annotations

from dataclasses import dataclass, field

from flexunet.config.schema import Config
from flexunet.labels import LabelSpace
from flexunet.losses import LossFn, build_loss, loss_name


@dataclass(frozen=True)
class EvalSettings:
    """The settings of one evaluation: labels, batches, loss, seed metrics, how masks and images are read."""

    space: LabelSpace
    batch_size: int  # [eval] batch_size
    seed_metrics: tuple[str, ...]  # [model] metrics: the seed's own, reported beside the honest ones
    loss_name: str  # the canonical name of [model] loss (or its default)
    loss: LossFn = field(compare=False)  # computed at the model's input size, as Keras' evaluate did
    instances: bool = False  # [mask] kind = "instances": the true objects are the mask's ids
    pixel_limit: int = 0  # [image] max_pixels as reading applies it
    color_order: str = "RGB"  # [image] color_order: the network's channel order, turned back to RGB for display
    input_size: tuple[int, int] = (0, 0)  # (width, height) of the model input

    @classmethod
    def from_config(cls, cfg: Config) -> EvalSettings:
        return cls(LabelSpace.from_config(cfg), cfg.eval.batch_size, tuple(cfg.model.metrics),
                   loss_name(cfg.model), build_loss(cfg.model),
                   cfg.mask.kind == "instances", cfg.image.pixel_limit(), cfg.image.color_order,
                   (cfg.model.image_width, cfg.model.image_height))

    @property
    def class_names(self) -> list[str]:
        """The foreground classes' names: [mask] class_names without the background, else class_1, class_2, ..."""
        return list(self.space.names[1:])
