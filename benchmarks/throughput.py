"""Training throughput: data images per second of a maximum-likelihood step and of an
adversarial step (one energy step plus one generator step) with the same generator and batch,
and generator samples per second, for the RealNVP and for the PixelCNN.

For the RealNVP it also measures

- the passes an adversarial step cannot avoid, timed one by one, and the ratio to the ML step
  they imply (the floor): the data encoded under q and under q_init without gradient, one
  decode of the generated batch with its encode under q_init and the energy net, forward and
  backward (the generator step), and the energy net's forward and backward on both batches
  (the energy step);
- Lightning's overhead: images/s of the same ML step (model, batch, data, Adam, clipping)
  through the Trainer and in a plain PyTorch loop, both from the median time between the ends
  of consecutive steps (data loading and every hook included).

The RealNVP figures are taken in ``--rounds`` rounds, the two sides of each comparison one
after the other, and the median over rounds is reported (this machine's speed drifts by
several percent from minute to minute).

Usage: ``python benchmarks/throughput.py [--steps N] [--warmup N] [--rounds N] [--config FILE]
[--pixelcnn-config FILE]``. Times the models of ``configs/mnist5k_realnvp_adversarial.yaml``
(the RealNVP of ``configs/mnist5k_realnvp_mle.yaml`` and a conv energy) and
``configs/mnist5k_pixelcnn_adversarial.yaml`` on the bundled mnist5k data; prints the figures
and writes ``benchmarks/results/throughput.json`` (RealNVP figures at the top level, PixelCNN
figures under ``pixelcnn``).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback
from results_file import report

from lit_ebm.build import build_generator, build_module
from lit_ebm.config import load_config
from lit_ebm.data import build_datamodule, event_shape

REPO = Path(__file__).resolve().parent.parent


class StepTimer(Callback):
    """Wall time of each training batch after ``warmup`` batches, and the times at which
    each batch ended."""

    def __init__(self, warmup: int) -> None:
        self.warmup = warmup
        self.seconds: list[float] = []
        self.ends: list[float] = []
        self._start = 0.0

    def on_train_batch_start(self, trainer: pl.Trainer, *args: Any) -> None:
        self._start = synchronised_time()

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: Any, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        self.ends.append(synchronised_time())
        if batch_idx >= self.warmup:
            self.seconds.append(self.ends[-1] - self._start)


def synchronised_time() -> float:
    """``time.perf_counter()`` once the GPU (if any) has finished its queued work."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter()


def _setup(config: str, objective: str, overrides: Sequence[str] = ()) -> tuple[Any, Any, Any]:
    """The config, a freshly seeded module and the DataModule of a timing run; ``overrides``
    are ``key=value`` settings applied last."""
    cfg = load_config([config], [f"model.objective={objective}", "model.generator_init=null",
                                 "eval.every_n_epochs=0", *overrides])
    pl.seed_everything(0)
    module = build_module(cfg, event_shape(cfg.data))
    datamodule = build_datamodule(cfg.data, dequantise=not module.generator.discrete)
    return cfg, module, datamodule


def _end_to_end(ends: list[float], warmup: int, batch_size: int) -> float:
    """Images per second from the median time between the ends of consecutive batches after
    the warm-up."""
    intervals = [b - a for a, b in zip(ends[warmup - 1:], ends[warmup:], strict=False)]
    return batch_size / statistics.median(intervals)


def images_per_second(config: str, objective: str, steps: int, warmup: int,
                      accelerator: str = "cpu", precision: str = "32-true",
                      overrides: Sequence[str] = ()) -> dict[str, float]:
    """Images per second of training steps of ``objective`` on one device."""
    cfg, module, datamodule = _setup(config, objective, overrides)
    timer = StepTimer(warmup)
    trainer = pl.Trainer(max_epochs=1, limit_train_batches=warmup + steps, limit_val_batches=0,
                         logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, accelerator=accelerator, devices=1,
                         precision=precision, callbacks=[timer])
    trainer.fit(module, datamodule=datamodule)
    median = statistics.median(timer.seconds)
    batch = cfg.data.batch_size
    return {"batch_size": batch, "median_step_seconds": median,
            "images_per_second": batch / median, "timed_steps": len(timer.seconds),
            "end_to_end_images_per_second": _end_to_end(timer.ends, warmup, batch)}


def plain_loop_images_per_second(config: str, steps: int, warmup: int) -> dict[str, float]:
    """The ML step of :func:`images_per_second` without Lightning: the same seeded model, data
    loader, loss, Adam settings and gradient clipping, in a plain PyTorch loop."""
    cfg, module, datamodule = _setup(config, "mle")
    datamodule.setup("fit")
    generator = module.generator.train()
    optim = cfg.model.generator_optim
    optimizer = torch.optim.Adam(generator.parameters(), lr=optim.lr, betas=tuple(optim.betas),
                                 weight_decay=optim.weight_decay)
    ends, seconds = [], []
    for index, batch in enumerate(datamodule.train_dataloader()):
        if index == warmup + steps:
            break
        start = time.perf_counter()
        loss = -generator.log_prob(batch).mean() / generator.num_dims
        optimizer.zero_grad()
        loss.backward()
        if optim.grad_clip_norm is not None:
            torch.nn.utils.clip_grad_norm_(generator.parameters(), optim.grad_clip_norm)
        optimizer.step()
        ends.append(time.perf_counter())
        if index >= warmup:
            seconds.append(ends[-1] - start)
    batch_size = cfg.data.batch_size
    return {"median_step_seconds": statistics.median(seconds),
            "end_to_end_images_per_second": _end_to_end(ends, warmup, batch_size)}


def _median_seconds(work: Any, repeats: int) -> float:
    work()  # warm-up
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        work()
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds)


def adversarial_floor(config: str, repeats: int) -> dict[str, float]:
    """Median times of the passes an adversarial step needs (residual energy, continuous
    generator), and the adversarial-to-ML step ratio they imply."""
    _, module, datamodule = _setup(config, "adversarial")
    datamodule.setup("fit")
    x = next(iter(datamodule.train_dataloader()))
    generator, energy = module.generator, module.energy
    net, base = energy.net, energy.base

    def ml_step() -> None:
        generator.zero_grad()
        (-generator.log_prob(x).mean()).backward()

    def encode_without_gradient() -> None:
        with torch.no_grad():
            generator.log_prob(x)

    def generator_pass() -> None:  # decode, q_init and net on the samples, backward
        generator.zero_grad()
        samples, log_q = generator.sample(len(x))
        (net(samples) - base.log_prob(samples) + log_q).mean().backward()

    def energy_pass() -> None:  # net on both batches (samples detached), backward
        net.zero_grad()
        torch.cat([net(x), net(x.flip(0))]).mean().backward()

    times = {name: _median_seconds(work, repeats) for name, work in (
        ("ml_step", ml_step), ("encode_without_gradient", encode_without_gradient),
        ("generator_pass", generator_pass), ("energy_pass", energy_pass))}
    floor = (2 * times["encode_without_gradient"] + times["generator_pass"]
             + times["energy_pass"])
    return {**{f"{name}_seconds": value for name, value in times.items()},
            "floor_over_ml_step": floor / times["ml_step"]}


@torch.no_grad()
def samples_per_second(config: str, repeats: int, device: str = "cpu",
                       overrides: Sequence[str] = ()) -> dict[str, float]:
    """Median wall time of ``generator.sample(batch_size)`` (untrained weights; the cost of
    sampling does not depend on them)."""
    cfg = load_config([config], list(overrides))
    torch.manual_seed(0)
    generator = build_generator(cfg.model.generator, event_shape(cfg.data)).eval().to(device)
    generator.sample(2)  # warm-up
    seconds = []
    for _ in range(repeats):
        start = synchronised_time()
        generator.sample(cfg.data.batch_size)
        seconds.append(synchronised_time() - start)
    median = statistics.median(seconds)
    return {"num_samples": cfg.data.batch_size, "median_seconds": median,
            "images_per_second": cfg.data.batch_size / median, "repeats": repeats}


def _median_round(measured: list[tuple[float, Any, Any]]) -> tuple[float, Any, Any]:
    """The round whose figure (first item) is the median of the rounds."""
    return sorted(measured, key=lambda entry: entry[0])[len(measured) // 2]


def throughput(config: str, steps: int, warmup: int, sample_repeats: int,
               rounds: int) -> dict[str, Any]:
    """Every figure of one config's generator; ML and adversarial steps in ``rounds`` rounds,
    with the figures of the round whose adversarial-to-ML ratio is the median."""
    measured = []
    for _ in range(rounds):
        mle, adversarial = (images_per_second(config, objective, steps, warmup)
                            for objective in ("mle", "adversarial"))
        ratio = adversarial["median_step_seconds"] / mle["median_step_seconds"]
        measured.append((ratio, mle, adversarial))
    ratio, mle, adversarial = _median_round(measured)
    return {"config": Path(config).name, "mle": mle, "adversarial": adversarial,
            "adversarial_over_mle_time": ratio,
            "adversarial_over_mle_time_rounds": [entry[0] for entry in measured],
            "sampling": samples_per_second(config, sample_repeats)}


def lightning_overhead(config: str, steps: int, warmup: int, rounds: int) -> dict[str, Any]:
    """Images/s of the ML step in a plain loop and through the Trainer, one after the other in
    each round; the overhead (plain over Trainer, minus 1) of the median round, in percent."""
    measured = []
    for _ in range(rounds):
        plain = plain_loop_images_per_second(config, steps, warmup)
        lightning = images_per_second(config, "mle", steps, warmup)
        overhead = 100 * (plain["end_to_end_images_per_second"]
                          / lightning["end_to_end_images_per_second"] - 1)
        measured.append((overhead, plain, lightning))
    overhead, plain, lightning = _median_round(measured)
    return {"plain_loop_images_per_second": plain["end_to_end_images_per_second"],
            "plain_loop_median_step_seconds": plain["median_step_seconds"],
            "lightning_images_per_second": lightning["end_to_end_images_per_second"],
            "lightning_median_step_seconds": lightning["median_step_seconds"],
            "overhead_percent": overhead,
            "overhead_percent_rounds": [entry[0] for entry in measured]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(REPO / "configs/mnist5k_realnvp_adversarial.yaml"))
    parser.add_argument("--pixelcnn-config",
                        default=str(REPO / "configs/mnist5k_pixelcnn_adversarial.yaml"))
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--sample-repeats", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the RealNVP figures")
    args = parser.parse_args()
    results: dict[str, Any] = {
        "machine": f"{platform.processor() or platform.machine()}, "
                   f"{torch.get_num_threads()} torch threads, torch {torch.__version__}",
        **throughput(args.config, args.steps, args.warmup, args.sample_repeats, args.rounds),
        "adversarial_floor": adversarial_floor(args.config, args.steps),
        "lightning_overhead": lightning_overhead(args.config, args.steps, args.warmup,
                                                 args.rounds),
        "pixelcnn": throughput(args.pixelcnn_config, args.steps, args.warmup,
                               args.sample_repeats, rounds=1),
    }
    report("throughput", results)
    print(f"RealNVP adversarial/ML step time: measured "
          f"{results['adversarial_over_mle_time']:.2f}, floor implied by the passes "
          f"{results['adversarial_floor']['floor_over_ml_step']:.2f}; Lightning overhead "
          f"{results['lightning_overhead']['overhead_percent']:.1f}%")


if __name__ == "__main__":
    main()
