"""A prepared GPU check, at most 8 minutes on one GPU (run it through benchmarks/gpu_check.sh).

On CIFAR-10-shaped data (random images in torchvision's format, so no download is needed) and
the models of ``configs/cifar10_{realnvp,pixelcnn}_adversarial.yaml`` at their batch size:

- images/s of maximum-likelihood and adversarial training steps of both generators on the
  previous path (``32-true``, the PixelCNN's previous cached sampler) and the current one
  (``bf16-mixed``, the current sampler), with the functions of benchmarks/throughput.py;
- the discriminator logits of one batch under bf16 autocast against float32 (lit_ebm computes
  log-densities in float32 under any precision: the difference should be float32 rounding);
- sampling seconds of 64 and 1,000 images: the PixelCNN's previous and current cached samplers,
  and the current one replayed as one CUDA graph (every position's kernels captured once, so
  no Python runs per position), and the RealNVP;
- with more than one GPU, a 2-process DDP adversarial run through ``python -m lit_ebm.fit``.

Results are written to ``benchmarks/results/gpu.json`` after every section, so a run cut short
keeps what it measured. Usage: ``python benchmarks/gpu_check.py [--batch-size N]``.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from results_file import RESULTS_DIR
from throughput import (
    PREVIOUS,
    REPO,
    _median_seconds,
    _setup,
    images_per_second,
    previous_sampler,
    sampling_seconds,
)

from lit_ebm import objectives
from lit_ebm.build import build_generator
from lit_ebm.config import load_config
from lit_ebm.data import event_shape
from lit_ebm.generators.pixelcnn_sampler import CachedSampler

sys.path.insert(0, str(REPO))
from tests.fake_data import write_cifar10  # noqa: E402

CONFIGS = {"realnvp": "configs/cifar10_realnvp_adversarial.yaml",
           "pixelcnn": "configs/cifar10_pixelcnn_adversarial.yaml"}
# (timed steps, warm-up steps): the PixelCNN's adversarial step samples a batch pixel by pixel
STEPS = {("realnvp", "mle"): (20, 5), ("realnvp", "adversarial"): (20, 5),
         ("pixelcnn", "mle"): (20, 5), ("pixelcnn", "adversarial"): (3, 1)}
PATHS = {"previous": "32-true", "current": "bf16-mixed"}
NUM_TRAIN = 2000  # random CIFAR-10-shaped training images, 100 of them held out for validation


def machine() -> dict[str, Any]:
    return {"gpu": torch.cuda.get_device_name(0), "gpus": torch.cuda.device_count(),
            "torch": torch.__version__, "cuda": torch.version.cuda,
            "bf16_supported": torch.cuda.is_bf16_supported(), "cpu": platform.machine()}


def overrides(root: Path, batch_size: int | None) -> list[str]:
    settings = [f"data.root={root}", "data.download=false", "data.val_size=100",
                "data.num_workers=4", "trainer.accelerator=gpu", "trainer.devices=1"]
    return settings + ([f"data.batch_size={batch_size}"] if batch_size else [])


def training_steps(root: Path, batch_size: int | None, paths: dict[str, str]) -> dict[str, Any]:
    """Images/s of every (generator, objective, path)."""
    results: dict[str, Any] = {}
    for (generator, objective), (steps, warmup) in STEPS.items():
        for path, precision in paths.items():
            with previous_sampler(path == "previous"):
                results[f"{generator}/{objective}/{path}"] = images_per_second(
                    str(REPO / CONFIGS[generator]), objective, steps, warmup, accelerator="gpu",
                    precision=precision, overrides=[*overrides(root, batch_size),
                                                    *(PREVIOUS if path == "previous" else [])])
    return results


def logit_agreement(root: Path, batch_size: int | None) -> dict[str, Any]:
    """Discriminator logits of one data batch and one generated batch, computed in float32
    and under bf16 autocast, for both generators."""
    results = {}
    for generator, config in CONFIGS.items():
        _, module, datamodule = _setup(str(REPO / config), "adversarial",
                                       overrides(root, batch_size))
        datamodule.setup("fit")
        x = next(iter(datamodule.train_dataloader())).cuda()
        module = module.cuda()

        @torch.no_grad()
        def logits(module: Any = module, x: torch.Tensor = x) -> torch.Tensor:
            torch.manual_seed(0)
            fake = module.generate(len(x), keep_graph=False)
            energy = torch.cat([module.energy_of(x), fake.energy(module.energy_of)])
            log_q = torch.cat([module.log_q(x), fake.log_q])
            return objectives.discriminator_logits(energy, module.log_z, log_q)

        full = logits()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            mixed = logits()
        results[generator] = {"max_abs_logit": float(full.abs().max()),
                              "max_abs_difference": float((mixed - full).abs().max()),
                              "dtype_under_autocast": str(mixed.dtype)}
    return results


@torch.no_grad()
def graphed_sampling_seconds(config: str, num_samples: int, repeats: int) -> float:
    """Median seconds of the PixelCNN's current cached sampler replayed as one CUDA graph,
    fresh uniforms copied into its static input before each replay."""
    cfg = load_config([config], [])
    torch.manual_seed(0)
    generator = build_generator(cfg.model.generator, event_shape(cfg.data)).cuda().eval()
    u = torch.rand(num_samples, *generator.event_shape, device="cuda", dtype=torch.float64)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up outside the capture, as CUDA graphs require
        CachedSampler(generator, u, 1.0).run()
    torch.cuda.current_stream().wait_stream(side)
    sampler = CachedSampler(generator, u, 1.0)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        sampler.log_q.zero_()
        sampler.run()

    def replay() -> None:
        sampler.u.copy_(torch.rand_like(u).permute(2, 3, 1, 0))
        graph.replay()

    return _median_seconds(replay, repeats)


def sampling(root: Path, batch_size: int | None) -> dict[str, Any]:
    """Seconds to draw 64 and 1,000 images with each sampler."""
    results: dict[str, Any] = {}
    for n in (64, 1000):
        for path in ("previous", "current"):
            results[f"pixelcnn/{n}/{path}"] = sampling_seconds(
                str(REPO / CONFIGS["pixelcnn"]), n, 3, previous=path == "previous",
                device="cuda")
        results[f"pixelcnn/{n}/current_cuda_graph"] = graphed_sampling_seconds(
            str(REPO / CONFIGS["pixelcnn"]), n, 3)
        results[f"realnvp/{n}"] = sampling_seconds(str(REPO / CONFIGS["realnvp"]), n, 3,
                                                   previous=False, device="cuda")
    return results


def ddp(out: Path) -> dict[str, Any]:
    """A 2-process DDP adversarial run (mnist5k, 20 batches per process) through the CLI."""
    command = [sys.executable, "-m", "lit_ebm.fit", "--config",
               "configs/mnist5k_realnvp_adversarial.yaml", "model.generator_init=null",
               "trainer.accelerator=gpu", "trainer.devices=2", "trainer.strategy=ddp",
               "trainer.max_epochs=1", "trainer.limit_train_batches=20",
               "trainer.limit_val_batches=2", "trainer.enable_progress_bar=false",
               "eval.every_n_epochs=0", f"output_dir={out}", "name=gpu_check_ddp"]
    start = time.perf_counter()
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=180)
    return {"returncode": done.returncode, "seconds": time.perf_counter() - start,
            "stderr_tail": done.stderr[-2000:]}


def run_section(results: dict[str, Any], name: str, work: Callable[[], Any], path: Path) -> None:
    """``results[name] = work()`` (or the error it raised), timed, then saved to ``path``."""
    start = time.perf_counter()
    try:
        results[name] = work()
    except Exception as err:  # a failed section is a result too; the others still run
        results[name] = {"error": f"{type(err).__name__}: {err}"}
    results.setdefault("section_seconds", {})[name] = time.perf_counter() - start
    path.write_text(json.dumps(results, indent=2) + "\n")
    print(f"{name}: done in {results['section_seconds'][name]:.1f} s", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=None,
                        help="per-device batch size (default: the configs', 64)")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("gpu_check: no CUDA GPU is visible (torch.cuda.is_available() is False); nothing "
              "was measured. Run it on a machine with a GPU.", file=sys.stderr)
        return 2
    paths = PATHS if torch.cuda.is_bf16_supported() else {"previous": PATHS["previous"]}
    path = RESULTS_DIR / "gpu.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"machine": machine(), "paths": paths}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "cifar10"
        write_cifar10(root, num_train=NUM_TRAIN, num_test=10)
        run_section(results, "logit_agreement", lambda: logit_agreement(root, args.batch_size),
                    path)
        run_section(results, "training_steps",
                    lambda: training_steps(root, args.batch_size, paths), path)
        run_section(results, "sampling", lambda: sampling(root, args.batch_size), path)
        if torch.cuda.device_count() > 1:
            run_section(results, "ddp_2_processes", lambda: ddp(Path(tmp) / "runs"), path)
    print(path.read_text(), end="")
    print(f"written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
