"""Maximum-likelihood training of a generator: the baseline the adversarial EBM is compared
with."""

from __future__ import annotations

from torch import Tensor, nn

from lit_ebm.generators.base import Generator
from lit_ebm.modules.base import ADAM_DEFAULTS, AdamSettings, GenerativeModule
from lit_ebm.registry import NetworkSpec


class MaximumLikelihood(GenerativeModule):
    """Fit the generator by maximum likelihood: minimise -log q(x) per dimension."""

    def __init__(self, generator: Generator | NetworkSpec,
                 generator_optim: AdamSettings = ADAM_DEFAULTS,
                 lr_schedule: str = "constant") -> None:
        super().__init__(generator, lr_schedule)
        self.generator_optim = {**ADAM_DEFAULTS, **generator_optim}
        self.save_networks_and_hyperparameters(generator=self.generator)

    def training_step(self, batch: Tensor, batch_idx: int) -> Tensor:
        log_q = self.log_q(batch)
        loss = -log_q.mean() / self.generator.num_dims
        self.check_finite("train/loss (negative log-likelihood per dimension)", loss)
        self.log_train_likelihood(log_q)
        return loss

    def optimizer_settings(self) -> list[tuple[str, list[nn.Parameter], AdamSettings]]:
        return [("generator", list(self.generator.parameters()), self.generator_optim)]
