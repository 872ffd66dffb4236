"""PixelCNN cached sampling at one torch thread and at every count up to the default.

Usage: ``python benchmarks/pixelcnn_threads.py [--config FILE] [--checkpoint CKPT]
[--num-images N ...] [--repeats R]``. Draws ``N`` images (64 and 250) with the cached sampler of
the PixelCNN of ``configs/mnist5k_pixelcnn_mle.yaml`` (untrained weights, seed 0, or a
checkpoint's) under ``torch.set_num_threads(t)`` for t = 1 .. the default count; prints the
median over ``R`` (3) draws and writes ``benchmarks/results/pixelcnn_threads.json``. Run it
alone on the machine: two processes with two threads each on two cores slow each other far more
than twice.
"""

from __future__ import annotations

import argparse
import platform
import statistics
from pathlib import Path
from typing import Any

import torch
from pixelcnn_sampling import load_pixelcnn, timed_sample
from results_file import report

REPO = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(REPO / "configs/mnist5k_pixelcnn_mle.yaml"))
    parser.add_argument("--checkpoint", default=None)
    parser.add_argument("--num-images", type=int, nargs="+", default=[64, 250])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    default_threads = torch.get_num_threads()
    generator = load_pixelcnn(args.config, args.checkpoint)
    generator.sample(2)  # warm-up
    seconds: dict[str, dict[str, float]] = {}
    for threads in range(1, default_threads + 1):
        torch.set_num_threads(threads)
        seconds[str(threads)] = {
            str(n): statistics.median(timed_sample(generator, n, "fast")[1]
                                      for _ in range(args.repeats))
            for n in args.num_images}
    torch.set_num_threads(default_threads)
    results: dict[str, Any] = {
        "machine": f"{platform.processor() or platform.machine()}, {default_threads} torch "
                   f"threads by default, torch {torch.__version__}",
        "config": Path(args.config).name,
        "weights": args.checkpoint or "untrained (seed 0)",
        "repeats": args.repeats,
        "median_seconds_by_threads_and_images": seconds,
    }
    report("pixelcnn_threads", results)


if __name__ == "__main__":
    main()
