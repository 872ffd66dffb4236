"""Runs that survive faults, and DDP on two CPU processes, through the CLI."""

from __future__ import annotations

import hashlib
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from lit_ebm.fit import main
from lit_ebm.modules import AdversarialEBM
from tests.tiny import TINY_ENERGY, TINY_IMAGE_RUN, logged_rows

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
TINY_ADVERSARIAL = [*TINY_IMAGE_RUN, *TINY_ENERGY]


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "lit_ebm.fit", *args]


@pytest.mark.ddp
def test_ddp_on_two_cpu_processes_completes_the_run_folder(tmp_path: Path) -> None:
    """Both ranks train, and both take part in FID/KID (samples, real shards, compute)."""
    proc = subprocess.run(
        _cli(*TINY_ADVERSARIAL, "trainer.devices=2", "trainer.strategy=ddp",
             "trainer.max_epochs=1", f"output_dir={tmp_path}", "name=ddp",
             "eval.every_n_epochs=1", "eval.num_samples=151", "eval.kid_subset_size=100"),
        capture_output=True, text=True, cwd=REPO, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "rank 0 finished" in proc.stdout and "rank 1 finished" in proc.stdout
    assert [p.name for p in (tmp_path / "ddp").iterdir()] == ["version_0"]
    run_dir = tmp_path / "ddp" / "version_0"
    for name in ("config.yaml", "metrics.csv", "checkpoints/last.ckpt", "samples/epoch0000.png"):
        assert (run_dir / name).is_file(), name
    rows = logged_rows(run_dir)
    assert any(row.get("val/bpd") for row in rows)
    fid = [float(row["val/fid_mnist_cnn"]) for row in rows if row.get("val/fid_mnist_cnn")]
    kid = [float(row["val/kid_mnist_cnn"]) for row in rows if row.get("val/kid_mnist_cnn")]
    assert len(fid) == len(kid) == 1 and fid[0] > 0 and math.isfinite(kid[0])
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    # 3 batches per rank, each an energy and a generator step
    assert ckpt["global_step"] == 6
    assert torch.isfinite(ckpt["state_dict"]["log_z"])


def test_sigkill_mid_epoch_then_resume_finishes(tmp_path: Path) -> None:
    run = [*TINY_ADVERSARIAL, "trainer.limit_train_batches=30", "checkpoint_every_n_steps=4",
           "model.energy.residual=true", f"output_dir={tmp_path}", "name=killed"]
    last = tmp_path / "killed" / "version_0" / "checkpoints" / "last.ckpt"
    proc = subprocess.Popen(_cli(*run), cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not last.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    killed_at = torch.load(last, weights_only=True)
    assert 0 < killed_at["global_step"] < 60, "killed inside the first epoch"

    assert main([*run, "ckpt_path=last"]) == 0
    resumed = tmp_path / "killed" / "version_1"
    final = torch.load(resumed / "checkpoints" / "last.ckpt", weights_only=True)
    assert final["global_step"] == 120, "2 epochs x 30 batches x (energy + generator step)"
    rows = logged_rows(resumed)
    assert [row["epoch"] for row in rows if row["val/bpd"]] == ["0", "1"]
    model = AdversarialEBM.load_from_checkpoint(resumed / "checkpoints" / "last.ckpt",
                                                map_location="cpu")
    scores = model.score(torch.rand(2, 1, 28, 28))
    assert scores["energy"].shape == (2,) and torch.isfinite(scores["log_prob"]).all()


def test_adversarial_non_finite_loss_names_quantity_and_keeps_checkpoint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = [*TINY_ADVERSARIAL, f"output_dir={tmp_path}", "name=nan"]
    assert main(run) == 0
    good = tmp_path / "nan" / "version_0" / "checkpoints" / "last.ckpt"
    digest = hashlib.sha256(good.read_bytes()).hexdigest()
    assert main([*run, "ckpt_path=last", "trainer.max_epochs=4",
                 "model.energy_optim.lr=1e30"]) == 1
    err = capsys.readouterr().err
    assert "train/loss_" in err and "not finite" in err and "global step" in err
    assert hashlib.sha256(good.read_bytes()).hexdigest() == digest


def test_corrupted_generator_init_is_a_clear_error(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    broken = tmp_path / "ml.ckpt"
    broken.write_bytes(os.urandom(4096))
    code = main([*TINY_ADVERSARIAL, f"output_dir={tmp_path}", f"model.generator_init={broken}"])
    assert code == 2
    err = capsys.readouterr().err
    assert "model.generator_init" in err and "truncated or corrupted" in err
