"""A prepared GPU check, at most 8 minutes on one GPU (run it through benchmarks/gpu_check.sh).

On CIFAR-10-shaped data (random images in torchvision's format, so no download is needed) and
the models of ``configs/cifar10_{realnvp,pixelcnn}_adversarial.yaml`` at their batch size:

- images/s of maximum-likelihood and adversarial training steps of both generators, in
  ``32-true`` and ``bf16-mixed`` (the functions of benchmarks/throughput.py, on the GPU);
- the discriminator logits of one batch under bf16 autocast against float32 (lit_ebm computes
  log-densities in float32 under any precision: the difference should be float32 rounding);
- generator sampling images/s (the PixelCNN's cached sampler, and the RealNVP);
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
from throughput import REPO, _setup, images_per_second, samples_per_second

from lit_ebm import objectives

sys.path.insert(0, str(REPO))
from tests.fake_data import write_cifar10  # noqa: E402

CONFIGS = {"realnvp": "configs/cifar10_realnvp_adversarial.yaml",
           "pixelcnn": "configs/cifar10_pixelcnn_adversarial.yaml"}
# (timed steps, warm-up steps): the PixelCNN's adversarial step samples a batch pixel by pixel
STEPS = {("realnvp", "mle"): (20, 5), ("realnvp", "adversarial"): (20, 5),
         ("pixelcnn", "mle"): (20, 5), ("pixelcnn", "adversarial"): (3, 1)}
PRECISIONS = ("32-true", "bf16-mixed")
NUM_TRAIN = 2000  # random CIFAR-10-shaped training images, 100 of them held out for validation


def machine() -> dict[str, Any]:
    return {"gpu": torch.cuda.get_device_name(0), "gpus": torch.cuda.device_count(),
            "torch": torch.__version__, "cuda": torch.version.cuda,
            "bf16_supported": torch.cuda.is_bf16_supported(), "cpu": platform.machine()}


def overrides(root: Path, batch_size: int | None) -> list[str]:
    settings = [f"data.root={root}", "data.download=false", "data.val_size=100",
                "data.num_workers=4", "trainer.accelerator=gpu", "trainer.devices=1"]
    return settings + ([f"data.batch_size={batch_size}"] if batch_size else [])


def training_steps(root: Path, batch_size: int | None, precisions: tuple[str, ...]
                   ) -> dict[str, Any]:
    """Images/s of every (generator, objective, precision)."""
    results: dict[str, Any] = {}
    for (generator, objective), (steps, warmup) in STEPS.items():
        for precision in precisions:
            results[f"{generator}/{objective}/{precision}"] = images_per_second(
                str(REPO / CONFIGS[generator]), objective, steps, warmup, accelerator="gpu",
                precision=precision, overrides=overrides(root, batch_size))
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


def sampling(root: Path, batch_size: int | None) -> dict[str, Any]:
    return {generator: samples_per_second(str(REPO / config), repeats=3, device="cuda",
                                          overrides=overrides(root, batch_size))
            for generator, config in CONFIGS.items()}


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
    precisions = PRECISIONS if torch.cuda.is_bf16_supported() else PRECISIONS[:1]
    path = RESULTS_DIR / "gpu.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"machine": machine(), "precisions": list(precisions)}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "cifar10"
        write_cifar10(root, num_train=NUM_TRAIN, num_test=10)
        run_section(results, "logit_agreement", lambda: logit_agreement(root, args.batch_size),
                    path)
        run_section(results, "training_steps",
                    lambda: training_steps(root, args.batch_size, precisions), path)
        run_section(results, "sampling", lambda: sampling(root, args.batch_size), path)
        if torch.cuda.device_count() > 1:
            run_section(results, "ddp_2_processes", lambda: ddp(Path(tmp) / "runs"), path)
    print(path.read_text(), end="")
    print(f"written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
