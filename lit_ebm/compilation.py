"""``torch.compile`` for the networks, opt in (``model.compile``, ``--compile``), eager where it
cannot work.

Compilation is lazy: Inductor generates C++ (CPU) or Triton (GPU) code on each network's first
call, which takes seconds to minutes, and pays back only over many calls. On a CPU it needs a C++
compiler; where none is on the PATH the networks stay eager and one line says so. A network
whose compilation fails later runs eager too (dynamo's ``suppress_errors``), so a run never
stops for it. Compiled are the networks' ``forward``: a flow's data-to-latent pass (its
``log_prob``), the PixelCNN's logits, and the energy's learnable network.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterable
from typing import TextIO

import torch
from torch import nn

CXX_NAMES = ("g++", "c++", "clang++")


def missing_compiler(device_type: str) -> str | None:
    """Why ``torch.compile`` cannot generate code for ``device_type`` here, or None."""
    if device_type != "cpu":
        return None
    names = [os.environ["CXX"]] if os.environ.get("CXX") else list(CXX_NAMES)
    if any(shutil.which(name) for name in names):
        return None
    return (f"no C++ compiler ({' or '.join(names)}) on the PATH, which torch.compile needs "
            "on a CPU")


def compile_networks(networks: Iterable[nn.Module], device_type: str,
                     stream: TextIO | None = None) -> bool:
    """Compile each network's ``forward`` in place; where that cannot work, write one line to
    ``stream`` (stderr) and leave them eager. Returns whether they were compiled."""
    reason = missing_compiler(device_type)
    if reason is not None:
        print(f"compile: {reason}; the networks run eager", file=stream or sys.stderr,
              flush=True)
        return False
    torch._dynamo.config.suppress_errors = True  # a network that fails to compile runs eager
    for network in networks:
        network.compile()
    return True
