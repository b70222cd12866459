"""config/catalog.py names what config accepts without importing models or losses; the registries must agree."""
from __future__ import annotations

import pytest

from flexunet.config import config_from_dict
from flexunet.config.catalog import ACTIVATIONS, LOSS_NAMES, MODEL_KEYS
from flexunet.errors import ConfigError
from flexunet.losses import LOSSES
from flexunet.models import MODELS
from flexunet.models.layers import _ACTIVATIONS, make_activation
from flexunet.models.registry import register_model


def test_catalog_names_are_the_registries_names() -> None:
    assert set(MODEL_KEYS) == set(MODELS)
    assert set(LOSSES) == LOSS_NAMES
    assert set(_ACTIVATIONS) == ACTIVATIONS


def test_a_model_missing_from_the_catalog_cannot_register() -> None:
    with pytest.raises(ValueError, match="declare the \\[model\\] keys it reads in MODEL_KEYS"):
        register_model("not_in_the_catalog")(lambda section: None)  # type: ignore[arg-type,return-value]


@pytest.mark.parametrize(("section", "message"), [
    ({"model": "flexunett"}, "[model] model = 'flexunett': unknown model; did you mean 'flexunet'?"),
    ({"loss": "dice_los"}, "[model] loss = 'dice_los': unknown loss; choose one of"),
    ({"activation": "reluu"}, "[model] activation = 'reluu': unknown activation; choose one of"),
])
def test_config_refuses_unknown_names_at_load(section: dict, message: str) -> None:
    with pytest.raises(ConfigError) as exc:
        config_from_dict({"model": section})
    assert message in str(exc.value)


def test_seed_spellings_of_activations_still_build() -> None:
    config_from_dict({"model": {"activation": "tf.nn.ReLU"}})
    assert type(make_activation("keras.activations.elu")).__name__ == "ELU"
