"""The rules that tie several config keys together (the schema holds each key's own)."""

from __future__ import annotations

from lit_ebm.config.rules import invalid
from lit_ebm.config.schema import (
    IMAGE_GENERATORS,
    POINT_GENERATORS,
    Config,
    log_density_precision,
)
from lit_ebm.objective_names import ADVERSARIAL


def cross_checks(cfg: Config) -> None:
    """The rules that tie several keys together, each raising for the key to change."""
    trainer = cfg.trainer
    if (expected := log_density_precision(trainer.precision)) is not None:
        raise invalid("trainer.precision", trainer.precision, expected)
    if trainer.max_steps == 0 or trainer.max_steps < -1:
        raise invalid("trainer.max_steps", trainer.max_steps,
                      "-1 (no limit) or a positive number of optimiser steps")
    if trainer.max_epochs < 1 and not (trainer.max_epochs == -1 and trainer.max_steps > 0):
        raise invalid("trainer.max_epochs", trainer.max_epochs,
                      "a positive number of epochs (or -1 together with trainer.max_steps > 0)")
    if cfg.model.lr_schedule == "cosine" and trainer.max_epochs <= 0:
        raise invalid("trainer.max_epochs", trainer.max_epochs,
                      "a positive number of epochs with model.lr_schedule=cosine")
    toy = cfg.data.name == "toy2d"
    generators = POINT_GENERATORS if toy else IMAGE_GENERATORS
    if cfg.model.generator.name not in generators:
        raise invalid("model.generator.name", cfg.model.generator.name,
                      f"{' or '.join(generators)} for data.name={cfg.data.name!r}")
    if cfg.model.energy.residual and cfg.model.energy_reg > 0:
        raise invalid("model.energy_reg", cfg.model.energy_reg,
                      "0 with model.energy.residual=true (the penalty would act on -log q_init, "
                      "thousands of nats on images)")
    if cfg.eval.kid_subset_size > cfg.eval.num_samples:
        raise invalid("eval.kid_subset_size", cfg.eval.kid_subset_size,
                      f"at most eval.num_samples={cfg.eval.num_samples} (KID draws subsets of "
                      "that size from the generated images)")
    if cfg.model.objective == ADVERSARIAL and cfg.early_stopping.patience is not None:
        raise invalid("early_stopping.patience", cfg.early_stopping.patience,
                      "null for adversarial runs: their generator's likelihood is meant to "
                      "give way, and no validation figure ranks them (docs/configuration.md)")
    if not cfg.model.train_generator and (cfg.model.objective != ADVERSARIAL
                                          or cfg.model.generator_init is None):
        raise invalid("model.train_generator", cfg.model.train_generator,
                      "true, unless model.objective=adversarial and model.generator_init names "
                      "the checkpoint whose generator the energy is fitted over")
    energy = "mlp" if toy else "conv"
    if cfg.model.objective == ADVERSARIAL and cfg.model.energy.name != energy:
        raise invalid("model.energy.name", cfg.model.energy.name,
                      f"{energy!r} for data.name={cfg.data.name!r}")
