"""PixelCNN sampling: the cached sampler against the naive one (one full forward pass per
sub-pixel), on the same weights from the same random state.

Usage: ``python benchmarks/pixelcnn_sampling.py [--config FILE] [--checkpoint CKPT]
[--num-images N]``. Times ``N`` (64) images from the PixelCNN of
``configs/mnist5k_pixelcnn_mle.yaml``, with untrained weights (seed 0) or those of a
checkpoint of it (either objective); prints the figures and writes
``benchmarks/results/pixelcnn_sampling.json`` (``identical``: both returned the same images).
The naive sampler takes minutes.
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path
from typing import Any

import torch
from results_file import report

from lit_ebm.build import build_generator
from lit_ebm.config import load_config
from lit_ebm.data import event_shape
from lit_ebm.generators import PixelCNN
from lit_ebm.modules import load_module

REPO = Path(__file__).resolve().parent.parent
SEED = 0


def load_pixelcnn(config: str, checkpoint: str | None) -> PixelCNN:
    """The config's PixelCNN, with a checkpoint's weights when one is given."""
    if checkpoint is None:
        cfg = load_config([config])
        torch.manual_seed(SEED)
        generator = build_generator(cfg.model.generator, event_shape(cfg.data))
    else:
        generator = load_module(checkpoint, map_location="cpu").generator
    if not isinstance(generator, PixelCNN):
        raise SystemExit(f"{checkpoint or config} holds no PixelCNN (model.generator.name)")
    return generator.eval()


def timed_sample(generator: PixelCNN, num_images: int, method: str) -> tuple[torch.Tensor, float]:
    """Images drawn from the random state ``SEED`` and the seconds it took."""
    torch.manual_seed(SEED)
    start = time.perf_counter()
    x, _ = generator.sample(num_images, method=method)
    return x, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(REPO / "configs/mnist5k_pixelcnn_mle.yaml"))
    parser.add_argument("--checkpoint", default=None)
    parser.add_argument("--num-images", type=int, default=64)
    args = parser.parse_args()
    generator = load_pixelcnn(args.config, args.checkpoint)
    generator.sample(2)  # warm-up
    fast, fast_seconds = timed_sample(generator, args.num_images, "fast")
    naive, naive_seconds = timed_sample(generator, args.num_images, "naive")
    results: dict[str, Any] = {
        "machine": f"{platform.processor() or platform.machine()}, "
                   f"{torch.get_num_threads()} torch threads, torch {torch.__version__}",
        "config": Path(args.config).name,
        "weights": args.checkpoint or f"untrained (seed {SEED})",
        "num_images": args.num_images,
        "image_shape": list(generator.event_shape),
        "naive_seconds": naive_seconds,
        "fast_seconds": fast_seconds,
        "speedup": naive_seconds / fast_seconds,
        "identical": torch.equal(fast, naive),
    }
    report("pixelcnn_sampling", results)


if __name__ == "__main__":
    main()
