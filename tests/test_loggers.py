"""The ``logger`` setting: its rule, the one-line refusal of a logger whose package is missing,
and a run logging to CSV, TensorBoard and MLflow at once (scalars, learning rates named by what
each optimiser trains, sample figures as images, provenance.json)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
import torchmetrics
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import lit_ebm
from lit_ebm import loggers
from lit_ebm.config import load_config
from lit_ebm.errors import ConfigError
from lit_ebm.fit import main
from lit_ebm.modules.base import cosine_factor
from lit_ebm.provenance import SOURCE_ROOT
from tests.tiny import TINY_IMAGE_RUN, logged

ENERGY_LR, GENERATOR_LR = 2e-4, 3e-3
ADVERSARIAL_RUN = [*TINY_IMAGE_RUN, "model.objective=adversarial", "model.energy.conv.channels=4",
                   "model.energy.conv.depth=1", "model.lr_schedule=cosine",
                   f"model.energy_optim.lr={ENERGY_LR}", f"model.generator_optim.lr={GENERATOR_LR}",
                   "trainer.limit_train_batches=2", "trainer.limit_val_batches=1"]


def test_default_loggers_are_csv_and_tensorboard() -> None:
    assert load_config([], []).logger == ["csv", "tensorboard"]
    assert load_config([], ["logger=[mlflow,wandb,csv]"]).logger == ["mlflow", "wandb", "csv"]


@pytest.mark.parametrize("value", ["[csv,comet]", "[csv,csv]", "[]", "mlflow", "[[csv]]"])
def test_logger_setting_refuses_unknown_duplicate_and_empty(value: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config([], [f"logger={value}"])
    message = str(caught.value)
    assert message.startswith("invalid value ") and "for 'logger': expected a list of distinct " \
        "loggers among csv, tensorboard, wandb, mlflow" in message
    assert "\n" not in message


def test_missing_logger_package_is_one_line_before_training(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capfd: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(loggers, "installed", lambda module: module != "mlflow")
    assert main([*TINY_IMAGE_RUN, f"output_dir={tmp_path / 'runs'}", "name=tiny",
                 "logger=[csv,tensorboard,mlflow]"]) == 2
    out, err = capfd.readouterr()
    lines = [line for line in (out + err).splitlines() if line.strip()]
    assert lines == ["error: logger=['csv', 'tensorboard', 'mlflow'] includes mlflow, but the "
                     "mlflow package is not installed: pip install \"lit_ebm[mlflow]\", or leave "
                     "it out: logger=[csv,tensorboard]"]
    assert not (tmp_path / "runs").exists(), "a failed start leaves nothing behind"


def test_missing_sole_logger_suggests_csv(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(loggers, "installed", lambda module: False)
    with pytest.raises(ConfigError, match=r'lit_ebm\[wandb\]", or leave it out: logger=\[csv\]$'):
        loggers.check_installed(["wandb"])
    loggers.check_installed(["csv"])  # needs nothing beyond Lightning


@pytest.fixture(scope="module")
def logged_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str], datetime]:
    """A two-epoch adversarial run with a cosine schedule, logging to CSV, TensorBoard and
    MLflow: its run folder, its command line and when it was started."""
    monkeypatch = pytest.MonkeyPatch()
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)  # the logger must opt in
    output_dir = tmp_path_factory.mktemp("logged") / "runs"
    argv = [*ADVERSARIAL_RUN, f"output_dir={output_dir}", "name=tiny",
            "logger=[csv,tensorboard,mlflow]"]
    monkeypatch.setattr(sys, "argv", ["lit-ebm-fit", *argv])
    before = datetime.now(timezone.utc)
    try:
        assert main(argv) == 0
    finally:
        monkeypatch.undo()
    return output_dir / "tiny" / "version_0", ["lit-ebm-fit", *argv], before


@pytest.mark.slow
def test_learning_rates_are_logged_per_optimiser(logged_run: tuple[Path, list[str], datetime]
                                                 ) -> None:
    run_dir, _, _ = logged_run
    for column, lr in (("lr-Adam/energy", ENERGY_LR), ("lr-Adam-1/generator", GENERATOR_LR)):
        expected = [lr * cosine_factor(epoch, 2) for epoch in range(2)]
        assert logged(run_dir, column) == pytest.approx(expected, rel=1e-12), column


@pytest.mark.slow
def test_tensorboard_holds_scalars_and_sample_images(
        logged_run: tuple[Path, list[str], datetime]) -> None:
    run_dir, _, _ = logged_run
    events = EventAccumulator(str(run_dir), size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    bpd = [event.value for event in events.Scalars("val/bpd")]
    assert bpd == pytest.approx(logged(run_dir, "val/bpd"), rel=1e-6) and len(bpd) == 2
    assert [e.value for e in events.Scalars("lr-Adam/energy")] == pytest.approx(
        logged(run_dir, "lr-Adam/energy"), rel=1e-6)
    images = events.Images("samples")
    png = Image.open(run_dir / "samples" / "epoch0001.png")
    assert len(images) == 2 and (images[-1].width, images[-1].height) == png.size


@pytest.mark.slow
def test_mlflow_file_store_holds_metrics_and_sample_artifacts(
        logged_run: tuple[Path, list[str], datetime], monkeypatch: pytest.MonkeyPatch) -> None:
    from mlflow.tracking import MlflowClient

    run_dir, _, _ = logged_run
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    client = MlflowClient((run_dir / "mlruns").absolute().as_uri())
    experiment = client.get_experiment_by_name("tiny")
    assert experiment is not None
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.run_name == "version_0" and run.info.status == "FINISHED"
    history = [m.value for m in client.get_metric_history(run.info.run_id, "val/bpd")]
    assert history == pytest.approx(logged(run_dir, "val/bpd"), rel=1e-6)
    assert "train/loss_d" in run.data.metrics
    artifacts = client.list_artifacts(run.info.run_id, "samples")
    assert [a.path for a in artifacts] == ["samples/epoch0000.png", "samples/epoch0001.png"]
    stored = Path(client.download_artifacts(run.info.run_id, "samples/epoch0001.png"))
    assert stored.read_bytes() == (run_dir / "samples" / "epoch0001.png").read_bytes()


@pytest.mark.slow
def test_run_records_its_provenance(logged_run: tuple[Path, list[str], datetime]) -> None:
    run_dir, argv, before = logged_run
    record = json.loads((run_dir / "provenance.json").read_text())
    assert set(record) == {"started_utc", "command", "git", "versions", "platform",
                           "resumed_from"}
    started = datetime.fromisoformat(record["started_utc"])
    assert started.utcoffset() is not None and started.utcoffset().total_seconds() == 0
    assert before <= started <= datetime.now(timezone.utc)
    assert record["command"] == argv and record["resumed_from"] is None
    assert record["versions"] == {
        "lit_ebm": lit_ebm.__version__, "torch": torch.__version__,
        "pytorch_lightning": pl.__version__, "torchmetrics": torchmetrics.__version__,
        "python": ".".join(map(str, sys.version_info[:3]))}
    assert record["platform"] and isinstance(record["platform"], str)
    # the tests run from the checkout that lit_ebm is imported from
    head = subprocess.run(["git", "-C", str(SOURCE_ROOT), "rev-parse", "HEAD"],
                          capture_output=True, text=True, check=True).stdout.strip()
    assert re.fullmatch(r"[0-9a-f]{40}", head) and record["git"]["commit"] == head
    assert isinstance(record["git"]["dirty"], bool)


@pytest.mark.slow
def test_resumed_run_gets_its_own_record_and_logs_the_resumed_rate(
        logged_run: tuple[Path, list[str], datetime], monkeypatch: pytest.MonkeyPatch) -> None:
    run_dir, argv, _ = logged_run
    first = (run_dir / "provenance.json").read_bytes()
    resume = [*argv[1:], "logger=[csv]", "ckpt_path=last", "trainer.max_epochs=3"]
    monkeypatch.setattr(sys, "argv", ["lit-ebm-fit", *resume])
    assert main(resume) == 0
    resumed = run_dir.parent / "version_1"
    record = json.loads((resumed / "provenance.json").read_text())
    assert record["resumed_from"] == str(run_dir / "checkpoints" / "last.ckpt")
    assert record["command"] == ["lit-ebm-fit", *resume]
    assert (run_dir / "provenance.json").read_bytes() == first, "the first record is untouched"
    # the schedule keeps its position (epoch 2) and is stretched to the new 3 epochs
    assert logged(resumed, "lr-Adam/energy") == pytest.approx(
        [ENERGY_LR * cosine_factor(2, 3)], rel=1e-12)
    assert not (resumed / "mlruns").exists() and not list(resumed.glob("events.out.*"))
