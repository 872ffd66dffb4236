"""One run per launch, whoever starts the processes: Lightning's launcher, torchrun on one or
two nodes (here two torchrun processes on this machine), or srun; and the checks that need
no second process."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import pytest
import torch

from lit_ebm import launch
from lit_ebm.config import Config
from lit_ebm.errors import ConfigError
from lit_ebm.fit import main, parameter_checksum
from lit_ebm.launch import Launch, current_launch, publish_run_dir, receive_run_dir
from lit_ebm.runs import create_run_dir
from lit_ebm.trainer import training_strategy
from tests.tiny import TINY_ENERGY, TINY_IMAGE_RUN

REPO = Path(__file__).resolve().parent.parent
TINY_ADVERSARIAL = [*TINY_IMAGE_RUN, *TINY_ENERGY, "trainer.max_epochs=1"]
FINISHED = re.compile(r"^rank (\d+) finished; run folder: (\S+); parameter checksum: (\w+)$",
                      re.MULTILINE)
LAUNCH_VARIABLES = ("TORCHELASTIC_RUN_ID", "TORCHELASTIC_USE_AGENT_STORE",
                    "TORCHELASTIC_RESTART_COUNT", "RANK", "LOCAL_RANK", "GROUP_RANK", "WORLD_SIZE",
                    "LOCAL_WORLD_SIZE", "GROUP_WORLD_SIZE", "NODE_RANK", "SLURM_NTASKS",
                    "SLURM_PROCID", "SLURM_LOCALID", "SLURM_NODEID", "SLURM_NNODES",
                    "SLURM_NTASKS_PER_NODE", "SLURM_JOB_ID", "SLURM_STEP_ID", "SLURM_JOB_NAME",
                    "MASTER_ADDR", "MASTER_PORT", launch.RUN_DIR_ENV)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("localhost", 0))
        return int(sock.getsockname()[1])


def _torchrun(*args: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", *args, "-m", "lit_ebm.fit"]


def _run_all(commands: Sequence[list[str]]) -> list[str]:
    """Run the commands side by side (one OpenMP thread each); their stdout, once every one
    exited 0."""
    env = {key: value for key, value in os.environ.items() if key not in LAUNCH_VARIABLES}
    env["OMP_NUM_THREADS"] = "1"
    procs = [subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, start_new_session=True)
             for command in commands]
    try:
        outputs = [proc.communicate(timeout=300) for proc in procs]
    finally:
        for proc in procs:  # a launcher and the processes it started, if one hangs
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
    for proc, (_, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err[-4000:]
    return [out for out, _ in outputs]


def _one_run(outputs: list[str], root: Path, world_size: int, version: int) -> Path:
    """Check that every rank finished in the same new ``version_<version>`` folder with the same
    parameters, those of its last checkpoint; returns the folder."""
    finished = sorted(match.groups() for out in outputs for match in FINISHED.finditer(out))
    assert [int(rank) for rank, _, _ in finished] == list(range(world_size)), outputs
    assert sorted(p.name for p in root.iterdir()) == [f"version_{v}" for v in range(version + 1)]
    run_dir = root / f"version_{version}"
    assert {Path(folder) for _, folder, _ in finished} == {run_dir}
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert torch.isfinite(ckpt["state_dict"]["log_z"])
    assert {checksum for _, _, checksum in finished} == {parameter_checksum(ckpt["state_dict"])}
    return run_dir


def _global_step(run_dir: Path) -> int:
    return int(torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["global_step"])


@pytest.mark.slow
@pytest.mark.ddp
def test_torchrun_on_two_nodes_makes_one_run_that_resumes(tmp_path: Path) -> None:
    """Two torchrun agents (node ranks 0 and 1, c10d rendezvous), one process each."""
    run = [*TINY_ADVERSARIAL, "trainer.accelerator=cpu", "trainer.devices=1",
           "trainer.num_nodes=2", "trainer.strategy=ddp", f"output_dir={tmp_path}", "name=nodes"]
    for version, extra in enumerate([[], ["ckpt_path=last", "trainer.max_epochs=2"]]):
        agent = _torchrun("--nnodes", "2", "--nproc_per_node", "1", "--rdzv-backend", "c10d",
                          "--rdzv-endpoint", f"localhost:{_free_port()}",
                          "--rdzv-id", f"lit_ebm_{version}")
        outputs = _run_all([[*agent, *run, *extra], [*agent, *run, *extra]])
        run_dir = _one_run(outputs, tmp_path / "nodes", world_size=2, version=version)
        assert _global_step(run_dir) == 6 * (version + 1), "3 batches x 2 optimiser steps"


@pytest.mark.slow
@pytest.mark.ddp
def test_torchrun_with_two_processes_makes_one_run_that_resumes(tmp_path: Path) -> None:
    """One torchrun agent starting two processes; the default strategy (auto)."""
    run = [*TINY_ADVERSARIAL, "trainer.devices=2", f"output_dir={tmp_path}", "name=procs"]
    for version, extra in enumerate([[], ["ckpt_path=last", "trainer.max_epochs=2"]]):
        agent = _torchrun("--nproc_per_node", "2", "--master-addr", "localhost",
                          "--master-port", str(_free_port()))
        outputs = _run_all([[*agent, *run, *extra]])
        run_dir = _one_run(outputs, tmp_path / "procs", world_size=2, version=version)
        assert _global_step(run_dir) == 6 * (version + 1)


@pytest.mark.slow
@pytest.mark.ddp
def test_lightning_launcher_runs_adversarial_with_the_default_strategy(tmp_path: Path) -> None:
    """``trainer.devices=2`` and strategy auto: DDP that tolerates the generator's unused
    parameters in the energy step."""
    outputs = _run_all([[sys.executable, "-m", "lit_ebm.fit", *TINY_ADVERSARIAL,
                         "trainer.devices=2", f"output_dir={tmp_path}", "name=auto"]])
    _one_run(outputs, tmp_path / "auto", world_size=2, version=0)


@pytest.mark.slow
@pytest.mark.ddp
def test_srun_tasks_share_one_run_through_a_marker_file(tmp_path: Path) -> None:
    """Two processes with the variables srun gives two tasks on two nodes."""
    port = str(_free_port())
    commands = []
    for rank in range(2):
        commands.append(["env", f"SLURM_PROCID={rank}", f"SLURM_NODEID={rank}", "SLURM_LOCALID=0",
                         "SLURM_NTASKS=2", "SLURM_NNODES=2", "SLURM_NTASKS_PER_NODE=1",
                         "SLURM_JOB_ID=4242", "SLURM_STEP_ID=0", "SLURM_JOB_NAME=lit_ebm",
                         "MASTER_ADDR=localhost", f"MASTER_PORT={port}", sys.executable, "-m",
                         "lit_ebm.fit", *TINY_ADVERSARIAL, "trainer.num_nodes=2",
                         f"output_dir={tmp_path}", "name=slurm"])
    _one_run(_run_all(commands), tmp_path / "slurm", world_size=2, version=0)


@pytest.fixture
def clean_launch_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No launcher's variables, whatever started pytest."""
    for name in LAUNCH_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def _one_error_line(capfd: pytest.CaptureFixture[str]) -> str:
    out, err = capfd.readouterr()
    lines = [line for line in (out + err).splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    return lines[0]


@pytest.mark.parametrize("setting, named", [
    ("trainer.num_nodes=0", "'trainer.num_nodes'"),
    ("data.batch_size=1600", "split over 3 processes"),  # 4000 // (1 device x 3 nodes) = 1333
])
def test_num_nodes_is_checked_and_counts_processes(
        setting: str, named: str, tmp_path: Path, clean_launch_env: pytest.MonkeyPatch,
        capfd: pytest.CaptureFixture[str]) -> None:
    args = [*TINY_IMAGE_RUN, "trainer.num_nodes=3", setting, f"output_dir={tmp_path / 'runs'}"]
    assert main(args) == 2
    assert named in _one_error_line(capfd)
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("variables, advice", [
    ({"TORCHELASTIC_RUN_ID": "none", "RANK": "0", "LOCAL_RANK": "0", "GROUP_RANK": "0",
      "WORLD_SIZE": "4", "LOCAL_WORLD_SIZE": "2", "GROUP_WORLD_SIZE": "2"},
     "torchrun started 4 processes (2 per node on 2 node(s))"),
    ({"SLURM_NTASKS": "2", "SLURM_PROCID": "0", "SLURM_NNODES": "2", "SLURM_JOB_NAME": "job"},
     "slurm started 2 processes (1 per node on 2 node(s))"),
])
def test_settings_that_miscount_the_launched_processes_are_refused(
        variables: dict[str, str], advice: str, tmp_path: Path,
        clean_launch_env: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]) -> None:
    for name, value in variables.items():
        clean_launch_env.setenv(name, value)
    assert main([*TINY_IMAGE_RUN, f"output_dir={tmp_path / 'runs'}"]) == 2
    line = _one_error_line(capfd)
    assert advice in line and "trainer.num_nodes=2" in line, line
    assert not (tmp_path / "runs").exists()


def test_marker_hands_rank_0s_folder_over_and_a_missing_one_times_out(
        tmp_path: Path, clean_launch_env: pytest.MonkeyPatch) -> None:
    marker = tmp_path / "run" / ".launch-slurm-1-0-0"
    marker.parent.mkdir()
    zero, one = (Launch("slurm", rank, 2, 1, 2, marker_key="slurm-1-0-0") for rank in (0, 1))
    publisher = threading.Timer(0.5, publish_run_dir, (zero, tmp_path / "run" / "version_3",
                                                        marker))
    publisher.start()
    assert receive_run_dir(one, marker) == tmp_path / "run" / "version_3"
    publisher.join()
    assert [p.name for p in marker.parent.iterdir()] == [marker.name], "no partial file left"
    marker.unlink()
    clean_launch_env.setattr(launch, "WAIT_S", 0.3)
    started = time.monotonic()
    with pytest.raises(ConfigError, match="rank 1 waited 0 s for rank 0 to name the run folder"):
        receive_run_dir(one, marker)
    assert time.monotonic() - started < 5


def test_launch_is_read_as_lightning_reads_it(clean_launch_env: pytest.MonkeyPatch) -> None:
    assert current_launch(2, 1) == Launch("lightning", 0, 2, 2, 1)
    clean_launch_env.setenv("NODE_RANK", "1")
    clean_launch_env.setenv("LOCAL_RANK", "1")
    clean_launch_env.setenv("MASTER_ADDR", "node0")
    clean_launch_env.setenv("MASTER_PORT", "1234")
    assert current_launch(2, 2) == Launch("lightning", 3, 4, 2, 2,
                                          marker_key="lightning-node0-1234")
    for name, value in {"TORCHELASTIC_RUN_ID": "abc", "RANK": "5", "WORLD_SIZE": "8",
                        "LOCAL_WORLD_SIZE": "4", "GROUP_WORLD_SIZE": "2",
                        "TORCHELASTIC_USE_AGENT_STORE": "True"}.items():
        clean_launch_env.setenv(name, value)
    assert current_launch(1, 1) == Launch("torchrun", 5, 8, 4, 2,
                                          store=("node0", 1234, "lit_ebm/run_dir/attempt_0"))


def test_a_run_folder_made_by_another_process_is_never_removed(tmp_path: Path) -> None:
    theirs = tmp_path / "runs" / "name" / "version_0"
    theirs.mkdir(parents=True)
    (theirs / "config.yaml").write_text("theirs")
    cfg = Config(output_dir=str(tmp_path / "runs"), name="name")
    with pytest.raises(ConfigError, match="created .*version_0' while this one started"):
        create_run_dir(theirs, cfg)
    assert (theirs / "config.yaml").read_text() == "theirs"
    assert create_run_dir(tmp_path / "runs" / "name" / "version_1", cfg) == theirs.parent / \
        "version_1"


@pytest.mark.parametrize("objective, strategy, processes, expected", [
    ("adversarial", "auto", 2, "ddp_find_unused_parameters_true"),
    ("adversarial", "auto", 1, "auto"),
    ("adversarial", "ddp", 2, "ddp_find_unused_parameters_true"),
    ("adversarial", "ddp_spawn", 2, "ddp_spawn_find_unused_parameters_true"),
    ("mle", "auto", 2, "auto"),
])
def test_adversarial_ddp_finds_unused_parameters(objective: str, strategy: str, processes: int,
                                                 expected: str) -> None:
    cfg = Config()
    cfg.model.objective, cfg.trainer.strategy, cfg.trainer.accelerator = objective, strategy, "cpu"
    assert training_strategy(cfg, processes) == expected
