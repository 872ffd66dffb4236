"""Every mistake in a run's settings is one line on stderr and exit code 2, before training
starts, and leaves no run folder behind."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from lit_ebm.fit import main
from tests.tiny import TINY_IMAGE_RUN, one_line_error

REPO = Path(__file__).resolve().parent.parent
TOY = ["--config", str(REPO / "configs/toy2d_mle.yaml"), "data.name=toy2d"]
ADVERSARIAL = ["model.objective=adversarial", "model.energy.conv.channels=4"]


def _truncated_mnist5k(tmp: Path) -> list[str]:
    bundled = REPO / "lit_ebm" / "bundled" / "mnist_5k.npz"
    (tmp / "mnist_5k.npz").write_bytes(bundled.read_bytes()[:20000])
    return [f"data.root={tmp}"]


def _damaged_torchvision_mnist(tmp: Path) -> list[str]:
    raw = tmp / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                 "t10k-labels-idx1-ubyte"):
        (raw / name).write_bytes(b"\x00\x00\x08\x03 damaged")
    return ["data.name=mnist", f"data.root={tmp}"]


def _empty_config(tmp: Path) -> list[str]:
    (tmp / "empty.yaml").write_text("# nothing but a comment\n")
    return ["--config", str(tmp / "empty.yaml")]


def _file_in_the_way(tmp: Path) -> list[str]:
    (tmp / "blocked").write_text("a file where the output folder should go")
    return [f"output_dir={tmp / 'blocked'}"]


def _corrupted_generator_init(tmp: Path) -> list[str]:
    (tmp / "ml.ckpt").write_bytes(os.urandom(2048))
    return [*ADVERSARIAL, f"model.generator_init={tmp / 'ml.ckpt'}"]


def _fixed(*args: str) -> Callable[[Path], list[str]]:
    return lambda tmp: list(args)


CASES: dict[str, tuple[Callable[[Path], list[str]], str]] = {
    # architecture settings that a model's constructor rejects, named by their config key
    "realnvp-too-many-scales": (_fixed("model.generator.realnvp.num_scales=6"),
                                "'model.generator.realnvp.num_scales'"),
    "realnvp-logit-margin": (_fixed("model.generator.realnvp.logit_alpha=0.7"),
                             "'model.generator.realnvp.logit_alpha'"),
    "realnvp-no-channels": (_fixed("model.generator.realnvp.hidden_channels=0"),
                            "'model.generator.realnvp.hidden_channels'"),
    "conv-energy-deeper-than-image": (_fixed(*ADVERSARIAL, "model.energy.conv.depth=6"),
                                      "'model.energy.conv.depth'"),
    "conv-energy-no-channels": (_fixed(*ADVERSARIAL, "model.energy.conv.channels=0"),
                                "'model.energy.conv.channels'"),
    "mlp-energy-no-confinement": (_fixed(*TOY, "model.objective=adversarial",
                                         "model.energy.name=mlp",
                                         "model.energy.mlp.confinement=0.0"),
                                  "'model.energy.mlp.confinement'"),
    "mixture-no-components": (_fixed(*TOY, "model.generator.name=mixture2d",
                                     "model.generator.mixture2d.num_components=0"),
                              "'model.generator.mixture2d.num_components'"),
    "flow2d-no-couplings": (_fixed(*TOY, "model.generator.realnvp2d.num_couplings=0"),
                            "'model.generator.realnvp2d.num_couplings'"),
    # trainer settings Lightning rejects, or that would train nothing
    "accelerator-absent": (_fixed("trainer.accelerator=tpu"), "trainer.accelerator="),
    "accelerator-unknown": (_fixed("trainer.accelerator=quantum"), "'trainer.accelerator'"),
    "precision-unknown": (_fixed("trainer.precision=17"), "'trainer.precision'"),
    "devices-zero": (_fixed("trainer.devices=0"), "'trainer.devices'"),
    "devices-more-than-exist": (_fixed(f"trainer.devices={(os.cpu_count() or 1) + 1}"),
                                "trainer.devices="),
    "strategy-unknown": (_fixed("trainer.strategy=foo"), "'trainer.strategy'"),
    "max-epochs-zero": (_fixed("trainer.max_epochs=0"), "'trainer.max_epochs'"),
    "no-training-batches": (_fixed("trainer.limit_train_batches=0"),
                            "'trainer.limit_train_batches'"),
    # numbers that are not finite
    "lr-nan": (_fixed("model.generator_optim.lr=nan"), "'model.generator_optim.lr'"),
    "energy-lr-inf": (_fixed(*ADVERSARIAL, "model.energy_optim.lr=inf"),
                      "'model.energy_optim.lr'"),
    "energy-reg-inf": (_fixed("model.energy_reg=inf"), "'model.energy_reg'"),
    "grad-clip-nan": (_fixed("model.energy_optim.grad_clip_norm=nan"),
                      "'model.energy_optim.grad_clip_norm'"),
    "logit-alpha-nan": (_fixed("model.generator.realnvp.logit_alpha=nan"),
                        "'model.generator.realnvp.logit_alpha'"),
    "betas-nan": (_fixed("model.generator_optim.betas=[nan,0.999]"),
                  "'model.generator_optim.betas'"),
    # data that cannot be read
    "mnist5k-truncated": (_truncated_mnist5k, "data.root"),
    "torchvision-damaged": (_damaged_torchvision_mnist, "data.download=true"),
    "torchvision-missing": (_fixed("data.name=mnist", "data.root=/nonexistent"), "data.root"),
    # where the run would be written
    "output-dir-file-in-the-way": (_file_in_the_way, "output_dir="),
    "output-dir-not-permitted": (_fixed("output_dir=/sys/lit_ebm_runs"), "output_dir="),
    # a batch larger than the training set
    "batch-larger-than-data": (_fixed("data.batch_size=5000"), "'data.batch_size'"),
    "empty-config-file": (_empty_config, "is empty"),
    # sample-quality settings FID and KID cannot use
    "eval-kid-subset-above-samples": (_fixed("eval.every_n_epochs=1", "eval.num_samples=200",
                                             "eval.kid_subset_size=300"),
                                      "'eval.kid_subset_size'"),
    "eval-fewer-samples-than-features": (_fixed("eval.every_n_epochs=1", "eval.num_samples=100",
                                                "eval.kid_subset_size=50"), "'eval.num_samples'"),
    "eval-every-negative": (_fixed("eval.every_n_epochs=-1"), "'eval.every_n_epochs'"),
    # stopping at a plateau: a sensible rule, and only where a validation figure ranks the run
    "early-stopping-patience-zero": (_fixed("early_stopping.patience=0"),
                                     "'early_stopping.patience'"),
    "early-stopping-negative-delta": (_fixed("early_stopping.patience=2",
                                             "early_stopping.min_delta=-0.1"),
                                      "'early_stopping.min_delta'"),
    "early-stopping-adversarial": (_fixed(*ADVERSARIAL, "early_stopping.patience=2"),
                                   "'early_stopping.patience'"),
    # families that were refused from the start
    "unknown-key": (_fixed("data.batch_sise=32"), "data.batch_size"),
    "wrong-type": (_fixed("data.batch_size=big"), "'data.batch_size'"),
    "missing-config-file": (_fixed("--config", "/nonexistent.yaml"), "--config"),
    "generator-for-other-data": (_fixed("model.generator.name=realnvp2d"),
                                 "'model.generator.name'"),
    "resume-without-checkpoint": (_fixed("ckpt_path=last"), "ckpt_path=last"),
    "corrupted-generator-init": (_corrupted_generator_init, "model.generator_init"),
}


def _tree(root: Path) -> set[Path]:
    return set(root.rglob("*"))


@pytest.mark.parametrize("case", CASES)
def test_mistake_is_one_line_exit_2_before_training(
    case: str, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    make_args, key = CASES[case]
    args = [*TINY_IMAGE_RUN, f"output_dir={tmp_path / 'runs'}", "name=bad", *make_args(tmp_path)]
    before = _tree(tmp_path)
    assert main(args) == 2
    out, err = capfd.readouterr()
    assert key in one_line_error(out + err)
    assert _tree(tmp_path) == before, "a failed start leaves nothing behind"


@pytest.mark.slow
def test_a_real_process_exits_2_without_traceback(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "lit_ebm.fit", *TINY_IMAGE_RUN, f"output_dir={tmp_path}",
         "model.generator.realnvp.num_scales=6"],
        capture_output=True, text=True, cwd=REPO, timeout=300,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()]
    assert "Traceback" not in proc.stderr and "model.generator.realnvp.num_scales" in proc.stderr
    assert not list(tmp_path.iterdir())
