"""A run's configuration: the typed schema with each key's rules, and loading with errors a
user can act on. Only the builder (:mod:`lit_ebm.build`) and the command lines read it."""

from lit_ebm.config.loading import load_config, to_container, to_yaml, unused_overrides
from lit_ebm.config.schema import IMAGE_DATASETS, Config, DataConfig, TrainerConfig

__all__ = ["IMAGE_DATASETS", "Config", "DataConfig", "TrainerConfig", "load_config",
           "to_container", "to_yaml", "unused_overrides"]
