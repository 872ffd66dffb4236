"""Training and sampling throughput, the previous path against the current one, side by side in
one process: for the RealNVP and for the PixelCNN, the maximum-likelihood step, the adversarial
step (one energy step plus one generator step) and generator sampling of 64 and 1,000 images.

- **previous**: ``32-true`` (every network in float32), contiguous memory
  (``model.channels_last=false``) and, for the PixelCNN, the previous cached sampler
  (``benchmarks/previous_paths.py``);
- **current**: ``--precision`` (default ``bf16-mixed`` where this machine computes bf16 natively,
  else ``32-true``: the generators' and the energy's hidden layers in bf16, every log-density in
  float32), channels-last memory (the default) and the current cached sampler, which runs in
  float32 under any precision.

Ratios are previous time over current time (keys ending in ``speedup``); steps of the two paths
alternate within each of ``--rounds`` rounds and the median round is kept (this machine's speed
drifts by several percent from minute to minute). It also reports, for the current path, the
adversarial-to-ML step ratio, the passes an adversarial RealNVP step cannot avoid (its floor),
the ML step with and without channels-last memory, Lightning's overhead over a plain
PyTorch loop (float32, contiguous), and the PixelCNN's adversarial step at generated batches of
16, 32 and 64 beside its ML step (``by_generated_batch_size``).
``torch.compile`` is not used on either path.

Usage: ``python benchmarks/throughput.py [--steps N] [--warmup N] [--rounds N]
[--precision P]``; times the models of ``configs/mnist5k_{realnvp,pixelcnn}_adversarial.yaml`` at
their batch size on the bundled mnist5k data, prints the figures and writes
``benchmarks/results/throughput.json``.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any
from unittest import mock

import pytorch_lightning as pl
import torch
from previous_paths import previous_cached_sampler
from pytorch_lightning.callbacks import Callback
from results_file import report

from lit_ebm.build import build_generator, build_module
from lit_ebm.config import load_config
from lit_ebm.data import build_datamodule, event_shape
from lit_ebm.generators import PixelCNN
from lit_ebm.precision import bf16_supported

REPO = Path(__file__).resolve().parent.parent
PREVIOUS = ["model.channels_last=false"]  # the previous path's memory format
CONFIGS = {"realnvp": "configs/mnist5k_realnvp_adversarial.yaml",
           "pixelcnn": "configs/mnist5k_pixelcnn_adversarial.yaml"}


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


@contextmanager
def previous_sampler(previous: bool) -> Iterator[None]:
    """The block with the PixelCNN's previous cached sampler in place of the current one."""
    with mock.patch.object(PixelCNN, "_sample_fast", previous_cached_sampler) if previous \
            else nullcontext():
        yield


def _setup(config: str, objective: str, overrides: Sequence[str] = ()) -> tuple[Any, Any, Any]:
    """The config, a freshly seeded module and the DataModule of a timing run; ``overrides``
    are ``key=value`` settings applied last."""
    cfg = load_config([config], [f"model.objective={objective}", "model.generator_init=null",
                                 "eval.every_n_epochs=0", *overrides])
    pl.seed_everything(0, verbose=False)
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
    loader, loss, Adam settings and gradient clipping, in a plain PyTorch loop (float32)."""
    cfg, module, datamodule = _setup(config, "mle", PREVIOUS)
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


def _median_seconds(work: Callable[[], Any], repeats: int) -> float:
    work()  # warm-up
    seconds = []
    for _ in range(repeats):
        start = synchronised_time()
        work()
        seconds.append(synchronised_time() - start)
    return statistics.median(seconds)


def _autocast(precision: str) -> Any:
    return (torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16-mixed"
            else nullcontext())


def adversarial_floor(config: str, repeats: int, precision: str,
                      overrides: Sequence[str] = ()) -> dict[str, float]:
    """Median times of the passes an adversarial step needs (residual energy, continuous
    generator) under ``precision``, and the adversarial-to-ML step ratio they imply."""
    _, module, datamodule = _setup(config, "adversarial", overrides)
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

    with _autocast(precision):
        times = {name: _median_seconds(work, repeats) for name, work in (
            ("ml_step", ml_step), ("encode_without_gradient", encode_without_gradient),
            ("generator_pass", generator_pass), ("energy_pass", energy_pass))}
    floor = (2 * times["encode_without_gradient"] + times["generator_pass"]
             + times["energy_pass"])
    return {**{f"{name}_seconds": value for name, value in times.items()},
            "floor_over_ml_step": floor / times["ml_step"]}


@torch.no_grad()
def sampling_seconds(config: str, num_samples: int, repeats: int, previous: bool,
                     device: str = "cpu") -> float:
    """Median wall time of ``generator.sample(num_samples)`` in float32 (untrained weights:
    the cost of sampling does not depend on them)."""
    cfg = load_config([config], [])
    torch.manual_seed(0)
    generator = build_generator(cfg.model.generator, event_shape(cfg.data)).to(device).eval()
    with previous_sampler(previous):
        return _median_seconds(lambda: generator.sample(num_samples), repeats)


def _median_round(measured: list[dict[str, Any]], key: str) -> dict[str, Any]:
    """The round whose ``key`` is the median of the rounds."""
    return sorted(measured, key=lambda entry: entry[key])[len(measured) // 2]


def steps_side_by_side(config: str, steps: int, warmup: int, rounds: int,
                       precision: str) -> dict[str, Any]:
    """ML and adversarial steps of both paths, alternating, in ``rounds`` rounds; the figures
    of the round whose adversarial-step speedup is the median."""
    measured = []
    for _ in range(rounds):
        entry: dict[str, Any] = {}
        for objective in ("mle", "adversarial"):
            for path, path_precision in (("previous", "32-true"), ("current", precision)):
                with previous_sampler(path == "previous"):
                    entry[f"{objective}_{path}"] = images_per_second(
                        config, objective, steps, warmup, precision=path_precision,
                        overrides=PREVIOUS if path == "previous" else ())
        seconds = {key: value["median_step_seconds"] for key, value in entry.items()}
        entry["ml_step_speedup"] = seconds["mle_previous"] / seconds["mle_current"]
        entry["adversarial_step_speedup"] = (seconds["adversarial_previous"]
                                             / seconds["adversarial_current"])
        entry["adversarial_over_ml_previous"] = (seconds["adversarial_previous"]
                                                 / seconds["mle_previous"])
        entry["adversarial_over_ml_current"] = (seconds["adversarial_current"]
                                                / seconds["mle_current"])
        measured.append(entry)
    chosen = _median_round(measured, "adversarial_step_speedup")
    return {**chosen, "adversarial_step_speedup_rounds": [
        entry["adversarial_step_speedup"] for entry in measured], "ml_step_speedup_rounds": [
        entry["ml_step_speedup"] for entry in measured]}


def generated_batch_sizes(config: str, sizes: Sequence[int], steps: int, warmup: int,
                          rounds: int, precision: str) -> dict[str, Any]:
    """The current path's adversarial step at each generated batch size
    (``model.generated_batch_size``; the data batch stays as configured) against its ML step,
    alternating in ``rounds`` rounds; the median step seconds of each over the rounds."""
    seconds: dict[str, list[float]] = {}
    for _ in range(rounds):
        seconds.setdefault("mle", []).append(images_per_second(
            config, "mle", steps, warmup, precision=precision)["median_step_seconds"])
        for n in sizes:
            seconds.setdefault(f"adversarial_generated_{n}", []).append(images_per_second(
                config, "adversarial", steps, warmup, precision=precision,
                overrides=[f"model.generated_batch_size={n}"])["median_step_seconds"])
    medians = {key: statistics.median(values) for key, values in seconds.items()}
    return {**{f"{key}_step_seconds": value for key, value in medians.items()},
            **{f"adversarial_over_ml_generated_{n}":
               medians[f"adversarial_generated_{n}"] / medians["mle"] for n in sizes}}


def sampling_side_by_side(config: str, sizes: Sequence[int], repeats: int) -> dict[str, Any]:
    """Sampling seconds of both samplers at each size (the PixelCNN; a flow has one sampler)."""
    out: dict[str, Any] = {}
    for n in sizes:
        previous = sampling_seconds(config, n, repeats, previous=True)
        current = sampling_seconds(config, n, repeats, previous=False)
        out[f"sampling_{n}"] = {"previous_seconds": previous, "current_seconds": current,
                                "speedup": previous / current}
    return out


def channels_last_speedup(config: str, steps: int, warmup: int, precision: str) -> dict[str, Any]:
    """The current path's ML step with its channels-last memory against without it."""
    without = images_per_second(config, "mle", steps, warmup, precision=precision,
                                overrides=PREVIOUS)
    last = images_per_second(config, "mle", steps, warmup, precision=precision)
    return {"contiguous_seconds": without["median_step_seconds"],
            "channels_last_seconds": last["median_step_seconds"],
            "speedup": without["median_step_seconds"] / last["median_step_seconds"]}


def lightning_overhead(config: str, steps: int, warmup: int, rounds: int) -> dict[str, Any]:
    """Images/s of the float32 ML step in a plain loop and through the Trainer, one after the
    other in each round; the overhead (plain over Trainer, minus 1) of the median round."""
    measured = []
    for _ in range(rounds):
        plain = plain_loop_images_per_second(config, steps, warmup)
        lightning = images_per_second(config, "mle", steps, warmup, overrides=PREVIOUS)
        measured.append({"plain_loop_images_per_second": plain["end_to_end_images_per_second"],
                         "lightning_images_per_second": lightning[
                             "end_to_end_images_per_second"],
                         "overhead_percent": 100 * (plain["end_to_end_images_per_second"]
                                                    / lightning["end_to_end_images_per_second"]
                                                    - 1)})
    chosen = _median_round(measured, "overhead_percent")
    return {**chosen, "overhead_percent_rounds": [entry["overhead_percent"]
                                                  for entry in measured]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10, help="timed steps per measurement")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sample-repeats", type=int, default=3)
    parser.add_argument("--precision", choices=["32-true", "bf16-mixed"],
                        default="bf16-mixed" if bf16_supported("cpu") else "32-true")
    args = parser.parse_args()
    realnvp, pixelcnn = (str(REPO / CONFIGS[name]) for name in ("realnvp", "pixelcnn"))
    results: dict[str, Any] = {
        "machine": f"{platform.processor() or platform.machine()}, "
                   f"{torch.get_num_threads()} torch threads, torch {torch.__version__}, "
                   f"bf16 native: {bf16_supported('cpu')}",
        "current_precision": args.precision,
        "realnvp": {
            **steps_side_by_side(realnvp, args.steps, args.warmup, args.rounds, args.precision),
            "sampling_64_seconds": sampling_seconds(realnvp, 64, args.sample_repeats, False),
            "floor_previous": adversarial_floor(realnvp, args.steps, "32-true", PREVIOUS),
            "floor_current": adversarial_floor(realnvp, args.steps, args.precision),
            "channels_last_ml_step": channels_last_speedup(realnvp, args.steps, args.warmup,
                                                           args.precision),
            "lightning_overhead": lightning_overhead(realnvp, args.steps, args.warmup,
                                                     args.rounds),
        },
        "pixelcnn": {
            **steps_side_by_side(pixelcnn, args.steps, args.warmup, args.rounds, args.precision),
            **sampling_side_by_side(pixelcnn, (64, 1000), args.sample_repeats),
            "by_generated_batch_size": generated_batch_sizes(
                pixelcnn, (16, 32, 64), args.steps, args.warmup, args.rounds, args.precision),
            "channels_last_ml_step": channels_last_speedup(pixelcnn, args.steps, args.warmup,
                                                           args.precision),
        },
    }
    report("throughput", results)
    for name in ("realnvp", "pixelcnn"):
        r = results[name]
        print(f"{name}: ML step {r['ml_step_speedup']:.2f}x, adversarial step "
              f"{r['adversarial_step_speedup']:.2f}x; adversarial/ML "
              f"{r['adversarial_over_ml_previous']:.2f} -> {r['adversarial_over_ml_current']:.2f}")
    for n in (64, 1000):
        print(f"pixelcnn sampling {n}: {results['pixelcnn'][f'sampling_{n}']['speedup']:.2f}x")


if __name__ == "__main__":
    main()
