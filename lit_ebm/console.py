"""What a run prints. Lightning's messages that never apply to a lit_ebm run are answered here,
each by its own filter, while a run starts and trains; every other message stays.

- Lightning's tips that advertise its cloud logger and model registry: not about the run.
- The deprecation warning that Lightning's own pytree helper raises under newer torch: no
  setting of a run can answer it (it goes when Lightning updates that helper).
- "modules in eval mode at the start of training", for a residual energy: its frozen base q0
  stays in eval mode by design (:class:`lit_ebm.energy.ResidualEnergy`), and nothing else may.
- "Experiment logs directory ... exists": the run folder is new, and holds config.yaml already.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn

from lit_ebm.energy import base_of

ADVERTISEMENT = "💡 Tip:"
LIGHTNING_INFO_LOGGER = "pytorch_lightning.utilities.rank_zero"


class _DropAdvertisements(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(ADVERTISEMENT)


def only_frozen_bases_in_eval_mode(module: nn.Module) -> bool:
    """Whether every submodule of ``module`` in eval mode belongs to a residual energy's
    frozen base (and there is such a base)."""
    bases = [name for name, sub in module.named_modules() if base_of(sub) is not None]
    in_eval = [name for name, sub in module.named_modules() if not sub.training]
    return bool(bases) and all(any(name.startswith(f"{base}.base".lstrip(".")) for base in bases)
                               for name in in_eval)


@contextmanager
def run_console(module: nn.Module) -> Iterator[None]:
    """Answer the messages listed in this module's docstring while a run of ``module`` starts
    and trains."""
    logger = logging.getLogger(LIGHTNING_INFO_LOGGER)
    advertisements = _DropAdvertisements()
    logger.addFilter(advertisements)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "Experiment logs directory .* exists and is not")
            warnings.filterwarnings("ignore", r"`isinstance\(treespec, LeafSpec\)` is deprecated")
            if only_frozen_bases_in_eval_mode(module):
                warnings.filterwarnings("ignore", r"Found \d+ module\(s\) in eval mode at the "
                                                  "start of training")
            yield
    finally:
        logger.removeFilter(advertisements)
