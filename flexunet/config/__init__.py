"""Config: the seed INI format, parsed with literals only, validated by one schema."""
from flexunet.config.checks import Location
from flexunet.config.load import config_from_dict, config_from_text, config_to_ini, load_config, parse_value
from flexunet.config.schema import Config, ModelSection, TrainSection

__all__ = [
    "Config", "Location", "ModelSection", "TrainSection", "config_from_dict", "config_from_text", "config_to_ini",
    "load_config", "parse_value",
]
