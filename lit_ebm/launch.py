"""Who started this process, and the one run folder that every process of a launch writes into.

Lightning's launcher (``trainer.devices=N`` in one command), torchrun and srun start the
processes of a training run differently. Under torchrun and srun every process runs
``python -m lit_ebm.fit`` from the top, so choosing and creating ``version_<n>`` would happen
once per process. Instead global rank 0 alone chooses and creates the folder, and hands its
path to the other ranks before any process group exists (each rank's Trainer, built before
``fit``, needs it):

* Lightning's launcher: rank 0 starts the other processes itself, inside ``fit``, so they
  inherit the path in the environment variable ``LIT_EBM_RUN_DIR``.
* torchrun: its agent serves a key-value store (a ``TCPStore`` at ``MASTER_ADDR:MASTER_PORT``,
  which the process group joins later) for exactly as long as the launch lasts. Rank 0 sets a
  key there and the others get it. Nothing is written to disk, and nothing left by an earlier
  launch can be read.
* srun, torchrun without an agent store (etcd rendezvous), and Lightning's launcher on
  several nodes: rank 0 writes a marker file ``<output_dir>/<name>/.launch-<id>`` naming the
  folder (atomically, by a rename). ``<id>`` is shared by every process of the launch: the
  SLURM job, step and restart count; torchrun's run id, address and restart count; else
  ``MASTER_ADDR`` and ``MASTER_PORT``. The other ranks poll for the file, so ``output_dir``
  must be on a file system every node sees (as resuming needs anyway).

Other ranks wait up to :data:`WAIT_S` seconds and then stop with a one-line
:class:`ConfigError`. Once the process group exists, :class:`OneRunFolder` checks that every
rank holds rank 0's folder, and rank 0 deletes the marker (every rank has read it by then).
Only rank 0 creates folders or files, so only rank 0 ever removes any.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytorch_lightning as pl
from lightning_fabric.plugins.environments import SLURMEnvironment, TorchElasticEnvironment
from pytorch_lightning.callbacks import Callback
from torch.distributed import TCPStore

from lit_ebm.errors import ConfigError, first_line

RUN_DIR_ENV = "LIT_EBM_RUN_DIR"  # rank 0's run folder, for the processes Lightning starts
WAIT_S = 1800.0  # how long other ranks wait for rank 0 (a process group's default timeout)
POLL_S = 0.2  # how often they look for the marker file


@dataclass(frozen=True)
class Launch:
    """This process's place in its launch: global ``rank`` of ``world_size`` processes,
    ``per_node`` on each of ``nodes`` nodes, started by ``launcher`` ("lightning", "torchrun"
    or "slurm"). ``store`` is torchrun's agent store (host, port, key), ``marker_key`` names
    the marker file; at most one of them is set."""

    launcher: str
    rank: int
    world_size: int
    per_node: int
    nodes: int
    store: tuple[str, int, str] | None = None
    marker_key: str | None = None


def current_launch(per_node: int, nodes: int) -> Launch:
    """Read this process's launch from the environment, picking the launcher as Lightning picks
    its cluster environment (torchrun, then SLURM, else its own launcher). ``per_node`` and
    ``nodes`` are the trainer's settings: what Lightning's own launcher starts."""
    env = os.environ
    if TorchElasticEnvironment.detect():
        return _torchrun(env)
    if SLURMEnvironment.detect():
        return _slurm(env)
    node = int(env.get("NODE_RANK", env.get("GROUP_RANK", 0)))
    rank = node * per_node + int(env.get("LOCAL_RANK", 0))
    key = _key("lightning", env.get("MASTER_ADDR", ""), env.get("MASTER_PORT", ""))
    return Launch("lightning", rank, per_node * nodes, per_node, nodes,
                  marker_key=key if nodes > 1 else None)


def _torchrun(env: Mapping[str, str]) -> Launch:
    world = int(env["WORLD_SIZE"])
    counts = (int(env.get("LOCAL_WORLD_SIZE", world)), int(env.get("GROUP_WORLD_SIZE", 1)))
    restart = env.get("TORCHELASTIC_RESTART_COUNT", "0")
    host, port = env.get("MASTER_ADDR", ""), env.get("MASTER_PORT", "")
    if env.get("TORCHELASTIC_USE_AGENT_STORE") == "True" and host and port:
        return Launch("torchrun", int(env["RANK"]), world, *counts,
                      store=(host, int(port), f"lit_ebm/run_dir/attempt_{restart}"))
    key = _key("torchrun", env["TORCHELASTIC_RUN_ID"], host, port, restart)
    return Launch("torchrun", int(env["RANK"]), world, *counts, marker_key=key)


def _slurm(env: Mapping[str, str]) -> Launch:
    world = int(env["SLURM_NTASKS"])
    nodes = int(env.get("SLURM_NNODES", env.get("SLURM_JOB_NUM_NODES", "1")))
    per_node = re.match(r"\d+", env.get("SLURM_NTASKS_PER_NODE", ""))
    key = _key("slurm", env.get("SLURM_JOB_ID", ""), env.get("SLURM_STEP_ID", ""),
               env.get("SLURM_RESTART_COUNT", "0"))
    return Launch("slurm", int(env["SLURM_PROCID"]), world,
                  int(per_node.group()) if per_node else world // nodes, nodes, marker_key=key)


def _key(*parts: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", "-".join(parts))


def check_process_count(launch: Launch, devices: object, per_node: int, nodes: int) -> None:
    """Refuse ``trainer.devices`` and ``trainer.num_nodes`` (``per_node`` x ``nodes``
    processes) that differ from what torchrun or srun started."""
    started = (launch.world_size, launch.per_node, launch.nodes)
    if launch.launcher == "lightning" or started == (per_node * nodes, per_node, nodes):
        return
    outside = ("" if launch.launcher == "torchrun" else " (or, in a SLURM allocation without "
               "srun, set SLURM_JOB_NAME=interactive to let Lightning start the processes)")
    raise ConfigError(
        f"{launch.launcher} started {launch.world_size} processes ({launch.per_node} per node "
        f"on {launch.nodes} node(s)), but trainer.devices={devices!r} and "
        f"trainer.num_nodes={nodes} ask for {per_node} per node on {nodes}: use "
        f"trainer.devices={launch.per_node} trainer.num_nodes={launch.nodes}{outside}")


def marker_path(launch: Launch, output_dir: str, name: str) -> Path | None:
    """The marker file through which this launch shares its run folder (None: no file)."""
    if launch.marker_key is None:
        return None
    return Path(output_dir) / name / f".launch-{launch.marker_key}"


def publish_run_dir(launch: Launch, run_dir: Path, marker: Path | None) -> None:
    """Rank 0: name the run folder it created to the other ranks of its launch."""
    if launch.world_size == 1:
        return
    if launch.store is not None:
        _agent_store(launch).set(launch.store[2], str(run_dir))
    elif marker is not None:
        partial = marker.with_name(f"{marker.name}.{os.getpid()}.partial")
        try:
            partial.write_text(str(run_dir))
            os.replace(partial, marker)
        except OSError as err:
            with contextlib.suppress(OSError):
                partial.unlink()
            raise ConfigError(f"cannot write '{marker}', which names the run folder to the other "
                              f"ranks ({err.strerror or err}): set output_dir to a writable "
                              "folder") from None


def receive_run_dir(launch: Launch, marker: Path | None) -> Path:
    """Any other rank: the run folder rank 0 created, waiting up to :data:`WAIT_S` seconds."""
    inherited = os.environ.get(RUN_DIR_ENV)
    if inherited:
        return Path(inherited)
    if launch.store is not None:
        host, port, key = launch.store
        try:
            return Path(_agent_store(launch).get(key).decode())
        except RuntimeError as err:
            raise ConfigError(
                f"rank {launch.rank} got no run folder from rank 0 through torchrun's store at "
                f"{host}:{port} within {WAIT_S:.0f} s ({first_line(err)}): rank 0 stopped "
                "before creating it; see its output") from None
    if marker is not None:
        return _wait_for_marker(launch, marker)
    raise ConfigError(
        f"this process has rank {launch.rank} (LOCAL_RANK or NODE_RANK is set), but no rank 0 "
        f"named a run folder ({RUN_DIR_ENV} is not set): start every rank through Lightning "
        "(trainer.devices=N), torchrun or srun")


def _agent_store(launch: Launch) -> TCPStore:
    assert launch.store is not None
    host, port, _ = launch.store
    try:
        return TCPStore(host, port, is_master=False, timeout=timedelta(seconds=WAIT_S))
    except RuntimeError as err:
        raise ConfigError(f"rank {launch.rank} cannot reach torchrun's store at {host}:{port} "
                          f"({first_line(err)}): start the run through torchrun") from None


def _wait_for_marker(launch: Launch, marker: Path) -> Path:
    deadline = time.monotonic() + WAIT_S
    while True:
        try:
            named = marker.read_text().strip()
        except FileNotFoundError:
            named = ""
        if named:
            return Path(named)
        if time.monotonic() > deadline:
            raise ConfigError(
                f"rank {launch.rank} waited {WAIT_S:.0f} s for rank 0 to name the run folder in "
                f"'{marker}': rank 0 stopped before creating it (see its output), or output_dir "
                "is not on a file system that every node shares; set output_dir to one")
        time.sleep(POLL_S)


class OneRunFolder(Callback):
    """Once the process group exists: stop every rank unless all hold rank 0's run folder, and
    let rank 0 delete the launch's marker file, which every rank has read by then."""

    def __init__(self, run_dir: Path, marker: Path | None) -> None:
        self.run_dir = run_dir
        self.marker = marker

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        chosen = trainer.strategy.broadcast(str(self.run_dir), src=0)
        if trainer.strategy.reduce_boolean_decision(chosen != str(self.run_dir), all=False):
            stale = "" if self.marker is None else (
                f": a marker left by a launch that stopped early was read; delete "
                f"'{self.marker}' and start again")
            raise ConfigError(f"rank 0 created the run folder '{chosen}', but not every rank was "
                              f"handed it (rank {trainer.global_rank} holds '{self.run_dir}')"
                              f"{stale}")
        if trainer.is_global_zero and self.marker is not None:
            self.marker.unlink(missing_ok=True)
