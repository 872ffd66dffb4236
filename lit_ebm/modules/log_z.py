"""The learned log Z of the adversarial EBM, moved toward each batch's L_D-optimal offset
(Finn et al. 2016, fact 1; docs/mathematics.md, "Making the estimates better behaved")."""

from __future__ import annotations

import warnings

import torch
from pytorch_lightning import LightningModule
from torch import Tensor

from lit_ebm import objectives

UNCONVERGED = 1e-6  # |dL_D/dlog Z| past this share of its terms' size: log Z off its optimum


class LogZTracking(LightningModule):
    """A mixin for a module with a scalar parameter ``log_z``, a boolean buffer
    ``log_z_initialised`` and a fraction ``log_z_tracking``."""

    log_z: torch.nn.Parameter
    log_z_initialised: Tensor
    log_z_tracking: float

    def track_log_z(self, energy: Tensor, log_q: Tensor, num_real: int, logging: bool) -> None:
        """Move log Z toward the L_D-optimal offset of the union of the data batch (its first
        ``num_real`` entries) and the generated batch (fact 1), the mean over ranks: all the way
        on the first batch, a fraction ``log_z_tracking`` after it. On ``logging`` steps logs
        that offset (``train/log_z_ld_optimal``) and ``train/log_z_gap``, the learned log Z minus
        it. With tracking off the offset is only computed for the first batch and the log."""
        initialised = bool(self.log_z_initialised)
        if initialised and self.log_z_tracking == 0 and not logging:
            return
        energy, log_q = energy.double(), log_q.double()  # the check must not see rounding
        local = objectives.ld_optimal_log_z(energy, log_q, num_real)
        gradient, size = objectives.log_z_derivative(energy, log_q, local, num_real)
        if abs(gradient) > UNCONVERGED * size:
            warnings.warn(f"log Z: this batch's L_D-optimal log Z did not converge (dL_D/dlog Z "
                          f"{gradient:.3g} at {float(local):.6g})", stacklevel=2)
        optimum = self.trainer.strategy.reduce(local, reduce_op="mean")
        step = self.log_z_tracking if initialised else 1.0
        if initialised and logging:
            self.log_dict({"train/log_z_ld_optimal": optimum.float(),
                           "train/log_z_gap": self.log_z.detach() - optimum.float()})
        if step > 0:
            with torch.no_grad():
                self.log_z.lerp_(torch.as_tensor(optimum, dtype=self.log_z.dtype), step)
        self.log_z_initialised.fill_(True)
