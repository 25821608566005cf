"""Where this process sits in the job: node count and rank, processes per node, the master.

Inside a PyTorchJob pod the Kubeflow Training Operator (v1) injects the job's shape as env vars
(see ``operator_env``); flags given to ``bgeflow train`` win over them, and without either a run is
one node. The resolved values become ``torchrun`` arguments.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from bgeflow.core.errors import ConfigError
from bgeflow.steps.training.spec import DistributedSettings

DEFAULT_MASTER_ADDR = "127.0.0.1"
DEFAULT_MASTER_PORT = 29500


@dataclass(frozen=True)
class Distributed:
    nnodes: int
    node_rank: int
    nproc_per_node: int
    master_addr: str
    master_port: int
    #: True when nothing named a port: a one-node run then lets torchrun pick a free one.
    port_is_default: bool = False

    @property
    def world_size(self) -> int:
        return self.nnodes * self.nproc_per_node


def operator_env(*, node_rank: int, nnodes: int, nproc_per_node: int, master_addr: str,
                 master_port: int) -> dict[str, str]:
    """The env the Kubeflow Training Operator v1 gives pod ``node_rank`` of a PyTorchJob.

    From ``pkg/controller.v1/pytorch/envvar.go`` and ``master.go`` (training-operator v1.7+), for a
    job with one Master and ``nnodes - 1`` Workers and ``nprocPerNode`` set:

    - ``MASTER_ADDR``/``MASTER_PORT`` and ``PET_MASTER_ADDR``/``PET_MASTER_PORT``: the master pod's
      service and port;
    - ``WORLD_SIZE`` = replicas × nprocPerNode: the number of *processes* in the job;
    - ``RANK`` = the replica index (Master 0, Worker i → i + 1): a *node* rank, not a process rank
      (torchrun overwrites both for its workers);
    - ``PET_NNODES`` = replicas, ``PET_NODE_RANK`` = ``RANK``, ``PET_NPROC_PER_NODE`` = nprocPerNode:
      torchrun reads ``PET_*`` as defaults of its own flags;
    - ``PYTHONUNBUFFERED`` = "0" (any non-empty value unbuffers Python's output).
    """
    return {
        "PYTHONUNBUFFERED": "0",
        "MASTER_ADDR": master_addr,
        "MASTER_PORT": str(master_port),
        "PET_MASTER_ADDR": master_addr,
        "PET_MASTER_PORT": str(master_port),
        "WORLD_SIZE": str(nnodes * nproc_per_node),
        "RANK": str(node_rank),
        "PET_NNODES": str(nnodes),
        "PET_NODE_RANK": str(node_rank),
        "PET_NPROC_PER_NODE": str(nproc_per_node),
    }


def _env_int(environ: Mapping[str, str], name: str) -> int | None:
    raw = environ.get(name)
    if raw is None or raw == "":
        return None
    try:
        return int(raw)
    except ValueError:
        if name == "PET_NNODES" and ":" in raw:
            raise ConfigError(f"{name}={raw}: elastic PyTorchJobs (a node range) are not supported; "
                             "give the job a fixed number of workers") from None
        raise ConfigError(f"{name}={raw!r} in the environment is not an integer") from None


def resolve(config: DistributedSettings, environ: Mapping[str, str] | None = None,
            gpu_count: Callable[[], int] = lambda: 0) -> Distributed:
    """Flags, then the operator's env, then one node with one process per GPU (or one on CPU)."""
    env = os.environ if environ is None else environ
    nproc = config.nproc_per_node
    if nproc is None:
        raw = env.get("PET_NPROC_PER_NODE")
        if raw in ("auto", "gpu"):
            nproc = max(gpu_count(), 1)
        elif raw == "cpu":
            nproc = 1
        else:
            nproc = _env_int(env, "PET_NPROC_PER_NODE") or max(gpu_count(), 1)
    nnodes = config.nnodes or _env_int(env, "PET_NNODES")
    node_rank = config.node_rank if config.node_rank is not None else _env_int(env, "PET_NODE_RANK")
    # An operator without nprocPerNode sets only WORLD_SIZE (= replicas) and RANK (= replica index).
    world = _env_int(env, "WORLD_SIZE")
    if nnodes is None and world is not None and "PET_NPROC_PER_NODE" not in env:
        nnodes = max(world // nproc, 1)
    if node_rank is None:
        node_rank = _env_int(env, "RANK") if nnodes and nnodes > 1 else None
    nnodes = nnodes or 1
    node_rank = node_rank or 0
    if node_rank >= nnodes:
        raise ConfigError(f"node rank {node_rank} is not below the node count {nnodes} (check PET_NODE_RANK/RANK)")
    addr = config.master_addr or env.get("PET_MASTER_ADDR") or env.get("MASTER_ADDR") or DEFAULT_MASTER_ADDR
    port = config.master_port or _env_int(env, "PET_MASTER_PORT") or _env_int(env, "MASTER_PORT")
    return Distributed(nnodes=nnodes, node_rank=node_rank, nproc_per_node=nproc, master_addr=addr,
                       master_port=port or DEFAULT_MASTER_PORT, port_is_default=port is None)


def torchrun_command(dist: Distributed, module: str, module_args: list[str]) -> list[str]:
    """``torchrun ... -m module args``; a lone node with no port named runs ``--standalone``."""
    torchrun = os.path.join(os.path.dirname(sys.executable), "torchrun")
    launcher = [torchrun] if os.access(torchrun, os.X_OK) else (
        [found] if (found := shutil.which("torchrun")) else [sys.executable, "-m", "torch.distributed.run"])
    if dist.nnodes == 1 and dist.port_is_default:
        shape = ["--standalone", "--nnodes", "1"]
    else:
        shape = ["--nnodes", str(dist.nnodes), "--node_rank", str(dist.node_rank),
                 "--master_addr", dist.master_addr, "--master_port", str(dist.master_port)]
    return [*launcher, *shape, "--nproc_per_node", str(dist.nproc_per_node), "-m", module, *module_args]
