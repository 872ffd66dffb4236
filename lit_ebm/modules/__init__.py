"""LightningModules: maximum-likelihood training of a generator, and the adversarial EBM."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from lit_ebm.modules.adversarial import AdversarialEBM, GeneratedBatch
from lit_ebm.modules.base import GenerativeModule
from lit_ebm.modules.mle import MaximumLikelihood

__all__ = ["AdversarialEBM", "GeneratedBatch", "GenerativeModule", "MaximumLikelihood",
           "load_module", "module_class"]


def module_class(hyper_parameters: dict[str, Any]) -> type[GenerativeModule]:
    """The LightningModule class a checkpoint's hyperparameters belong to."""
    return AdversarialEBM if "energy" in hyper_parameters else MaximumLikelihood


def load_module(path: str | Path, map_location: str | torch.device = "cpu") -> GenerativeModule:
    """Either module from its checkpoint, whichever it is."""
    hyper_parameters = torch.load(path, map_location="cpu", weights_only=True)["hyper_parameters"]
    return module_class(hyper_parameters).load_from_checkpoint(path, map_location=map_location)
