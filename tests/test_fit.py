"""End to end through the CLI: the run-folder contract, resuming, checkpoints, failures."""

from __future__ import annotations

import hashlib
from importlib.metadata import entry_points
from pathlib import Path

import pytest
import torch
from PIL import Image

from lit_ebm.fit import main
from lit_ebm.generators import RealNVP
from lit_ebm.modules import MaximumLikelihood
from tests.tiny import logged, logged_rows

pytestmark = pytest.mark.slow


def test_run_writes_every_contract_file(tiny_run: list[str], tmp_path: Path) -> None:
    assert main(tiny_run) == 0
    run_dir = tmp_path / "runs" / "tiny" / "version_0"
    assert (run_dir / "config.yaml").read_text().startswith("name: tiny")
    assert logged(run_dir, "train/bpd")
    val_bpd = logged(run_dir, "val/bpd")
    assert len(val_bpd) == 2 and 0.0 < val_bpd[1] < val_bpd[0], "two epochs of learning"
    checkpoints = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    assert "last.ckpt" in checkpoints
    assert any(name.startswith("best-epoch") for name in checkpoints)
    samples = sorted((run_dir / "samples").glob("*.png"))
    assert [p.name for p in samples] == ["epoch0000.png", "epoch0001.png"]
    assert Image.open(samples[0]).size[0] > 28

    second = main(tiny_run)
    assert second == 0 and (run_dir.parent / "version_1" / "metrics.csv").is_file()


def test_checkpoint_loads_without_pickle_and_without_config(tiny_run: list[str],
                                                            tmp_path: Path) -> None:
    assert main(tiny_run) == 0
    ckpt = tmp_path / "runs" / "tiny" / "version_0" / "checkpoints" / "last.ckpt"
    raw = torch.load(ckpt, map_location="cpu", weights_only=True)
    assert raw["hyper_parameters"]["generator"]["network"] == "RealNVP"
    assert raw["hyper_parameters"]["generator"]["args"]["hidden_channels"] == 8
    model = MaximumLikelihood.load_from_checkpoint(ckpt, map_location="cpu")
    assert isinstance(model.generator, RealNVP)
    images = torch.rand(3, 1, 28, 28)
    bpd = model.generator.bits_per_dim(images)
    assert bpd.shape == (3,) and torch.isfinite(bpd).all()
    loaded = model.state_dict()
    assert all(torch.equal(loaded[name], tensor) for name, tensor in raw["state_dict"].items())


def test_resume_from_last_continues_global_step(tiny_run: list[str], tmp_path: Path) -> None:
    assert main(tiny_run) == 0
    first = tmp_path / "runs" / "tiny" / "version_0"
    before = torch.load(first / "checkpoints" / "last.ckpt", weights_only=True)
    step_before = before["global_step"]
    assert step_before == 6
    assert main([*tiny_run, "ckpt_path=last", "trainer.max_epochs=3"]) == 0
    resumed = tmp_path / "runs" / "tiny" / "version_1"
    ckpt = torch.load(resumed / "checkpoints" / "last.ckpt", weights_only=True)
    assert (ckpt["global_step"], ckpt["epoch"]) == (9, before["epoch"] + 1)
    assert ckpt["optimizer_states"][0]["state"], "optimizer state is restored and carried on"
    steps = [int(row["step"]) for row in logged_rows(resumed) if row.get("train/bpd")]
    assert min(steps) >= step_before, "the resumed run starts where the first stopped"


def test_resume_errors_are_clear(tiny_run: list[str], tmp_path: Path,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*tiny_run, "ckpt_path=last"]) == 2
    assert "no '" in capsys.readouterr().err
    broken = tmp_path / "broken.ckpt"
    broken.write_bytes(b"PK\x03\x04 not really a zip")
    assert main([*tiny_run, f"ckpt_path={broken}"]) == 2
    err = capsys.readouterr().err
    assert "truncated or corrupted" in err and "Traceback" not in err


def test_checkpoint_of_another_architecture_is_refused(tiny_run: list[str], tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    assert main(tiny_run) == 0
    assert main([*tiny_run, "ckpt_path=last", "model.generator.realnvp.hidden_channels=4"]) == 2
    err = capsys.readouterr().err
    assert "does not fit this model" in err and "shape" in err


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(
    tiny_run: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(tiny_run) == 0
    good = tmp_path / "runs" / "tiny" / "version_0" / "checkpoints" / "last.ckpt"
    digest = hashlib.sha256(good.read_bytes()).hexdigest()
    code = main([*tiny_run, "ckpt_path=last", "trainer.max_epochs=4",
                 "model.generator_optim.lr=1e30", "checkpoint_every_n_steps=1"])
    assert code == 1
    err = capsys.readouterr().err
    assert "train/loss" in err and "not finite" in err and "global step" in err
    assert hashlib.sha256(good.read_bytes()).hexdigest() == digest
    for ckpt in (tmp_path / "runs" / "tiny" / "version_1" / "checkpoints").glob("*.ckpt"):
        state = torch.load(ckpt, weights_only=True)["state_dict"]
        assert all(torch.isfinite(t).all() for t in state.values() if t.is_floating_point())


def test_cosine_schedule_anneals_to_zero_and_config_lr_wins_on_resume(tiny_run: list[str],
                                                                        tmp_path: Path) -> None:
    assert main([*tiny_run, "model.lr_schedule=cosine", "trainer.max_epochs=4",
                 "trainer.limit_train_batches=1"]) == 0
    done = torch.load(tmp_path / "runs" / "tiny" / "version_0" / "checkpoints" / "last.ckpt",
                      weights_only=True)
    assert done["lr_schedulers"][0]["last_epoch"] == 4
    assert done["optimizer_states"][0]["param_groups"][0]["lr"] == pytest.approx(0.0, abs=1e-12)
    best = next((tmp_path / "runs" / "tiny" / "version_0" / "checkpoints").glob("best-*"))
    assert main([*tiny_run, f"ckpt_path={best}", "model.lr_schedule=cosine",
                 "trainer.max_epochs=8", "trainer.limit_train_batches=1",
                 "model.generator_optim.lr=0.002"]) == 0
    resumed = torch.load(tmp_path / "runs" / "tiny" / "version_1" / "checkpoints" / "last.ckpt",
                         weights_only=True)
    group = resumed["optimizer_states"][0]["param_groups"][0]
    assert group["initial_lr"] == 0.002 and group["lr"] == pytest.approx(0.0, abs=1e-12)


def test_last_checkpoint_holds_the_final_step_with_a_step_interval(tiny_run: list[str],
                                                                   tmp_path: Path) -> None:
    """Lightning alone skips the epoch-end last.ckpt once a step interval is set: the steps
    after the last multiple of the interval would be lost."""
    assert main([*tiny_run, "checkpoint_every_n_steps=4"]) == 0  # 6 steps: saved at 4, then?
    checkpoints = tmp_path / "runs" / "tiny" / "version_0" / "checkpoints"
    assert torch.load(checkpoints / "last.ckpt", weights_only=True)["global_step"] == 6
    assert sorted(p.name for p in checkpoints.iterdir()) == ["best-epoch001.ckpt", "last.ckpt"]


def test_a_plateaued_run_stops_early(tiny_run: list[str], tmp_path: Path) -> None:
    """No epoch improves val/bpd by 1,000 bits/dim: with a patience of 2 the run stops after
    its third epoch instead of running all 5."""
    assert main([*tiny_run, "trainer.max_epochs=5", "trainer.limit_train_batches=1",
                 "early_stopping.patience=2", "early_stopping.min_delta=1000"]) == 0
    run_dir = tmp_path / "runs" / "tiny" / "version_0"
    assert len(logged(run_dir, "val/bpd")) == 3
    last = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["loops"]["fit_loop"]["epoch_progress"]["total"]["completed"] == 3
    assert len(list((run_dir / "checkpoints").glob("best-epoch*.ckpt"))) == 1


def test_console_scripts_are_the_command_lines() -> None:
    scripts = {entry.name: entry.value for entry in entry_points(group="console_scripts")
               if entry.name.startswith("lit-ebm-")}
    assert scripts == {"lit-ebm-fit": "lit_ebm.fit:main",
                       "lit-ebm-evaluate": "lit_ebm.evaluate:main",
                       "lit-ebm-sample": "lit_ebm.sample:main"}
