"""Several "pods" of one PyTorchJob on this machine: the multi-node path without a cluster.

Each pod is a separate process group running the same pod command with exactly the env the
Kubeflow Training Operator gives that replica (``operator_env``), all pointing at one master on
127.0.0.1. Like the operator's default ``runPolicy``, one failed pod fails the job: the others are
stopped and its exit code is returned.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from typing import IO

from bgeflow.core.errors import ConfigError
from bgeflow.steps.training.distributed import Distributed, operator_env

log = logging.getLogger(__name__)

LOCAL_MASTER_ADDR = "127.0.0.1"
_STOP_GRACE_S = 20.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOCAL_MASTER_ADDR, 0))
        return int(s.getsockname()[1])


def shared_cores_env(processes: int, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """``OMP_NUM_THREADS`` for ``processes`` training processes that share this machine's cores.

    Real pods have their own cores; local pods (processes or containers) share these, so each gets
    its part instead of every one starting a thread per core. Nothing when the variable is set.
    """
    if "OMP_NUM_THREADS" in (os.environ if environ is None else environ):
        return {}
    return {"OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // max(processes, 1)))}


def cpu_cores() -> int:
    """The CPU cores this process may run on: its affinity (taskset, a container's cpuset), else all."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # no sched_getaffinity (macOS)
        return os.cpu_count() or 1


def _all_nodes_here(dist: Distributed) -> bool:
    """Whether every node of the job runs on this machine: a master on loopback is reachable from here only."""
    if dist.master_addr == "localhost":
        return True
    try:
        return ipaddress.ip_address(dist.master_addr).is_loopback
    except ValueError:  # a host name (a PyTorchJob's master service)
        return False


def oversubscription(dist: Distributed, *, use_cpu: bool, cores: int | None = None) -> str | None:
    """The warning for more CPU training processes on this machine than it has cores; None when they fit.

    Not refused: oversubscribing is legal (a test of a multi-process setup on a laptop). But on CPU a
    process per core is the most that adds compute, so more only cost time and memory, and nothing else
    says so before minutes of slow training. With a GPU the processes are checked against the GPUs
    (``pod.check_launch``). Local pods (``--local-nodes``; master on loopback) share this machine's
    cores: their node 0 counts them all, and the others say nothing.
    """
    if not use_cpu:
        return None
    nodes = dist.nnodes if dist.nnodes > 1 and _all_nodes_here(dist) else 1
    if nodes > 1 and dist.node_rank != 0:
        return None
    processes, cores = nodes * dist.nproc_per_node, cores or cpu_cores()
    if processes <= cores:
        return None
    # The setting by its flag: a pod may have it from the operator's PET_NPROC_PER_NODE, which bgeflow set
    # from that flag (or a run spec's training.nproc_per_node).
    shape = (f"{nodes} local nodes × nproc_per_node {dist.nproc_per_node} (--local-nodes, --nproc-per-node) start"
             if nodes > 1 else f"nproc_per_node {dist.nproc_per_node} (--nproc-per-node) starts")
    return (f"{shape} {processes} training processes on this machine's {cores} CPU core(s) (no GPU in use): "
            f"they take turns on the cores, so they train no more samples per second than {cores} would, every step "
            f"waits for the slowest, and memory holds {processes} copies of the model. Allowed; lower it to at most "
            f"{cores} process(es) unless the oversubscription is meant")


def _pump(stream: IO[bytes], prefix: str, lock: threading.Lock) -> None:
    for raw in iter(stream.readline, b""):
        line = raw.decode("utf-8", errors="replace").rstrip("\n")
        with lock:
            # The pods' output is their log: stderr, so the verb's stdout stays its one JSON result.
            sys.stderr.write(f"{prefix}{line}\n")
            sys.stderr.flush()
    stream.close()


def _stop(procs: Sequence[subprocess.Popen[bytes]]) -> None:
    """SIGTERM every live pod's process group (torchrun then stops its workers), SIGKILL stragglers."""
    live = [p for p in procs if p.poll() is None]
    for p in live:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGTERM)
    deadline = time.monotonic() + _STOP_GRACE_S
    for p in live:
        try:
            p.wait(timeout=max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)
            p.wait()


def run_local_pods(pod_command: Sequence[str], *, nnodes: int, nproc_per_node: int,
                   env: Mapping[str, str] | None = None, master_port: int | None = None,
                   timeout: float | None = None) -> int:
    """Run ``pod_command`` as ``nnodes`` pods of one PyTorchJob; 0 when all succeed.

    Each pod gets this process's env, then ``env``, then the operator's variables for its replica
    (``MASTER_ADDR=127.0.0.1``, ``MASTER_PORT``, ``WORLD_SIZE`` = nnodes × nproc_per_node, ``RANK`` =
    node rank, ``PET_NNODES``, ``PET_NODE_RANK``, ``PET_NPROC_PER_NODE``, ``PET_MASTER_ADDR``,
    ``PET_MASTER_PORT``; see ``bgeflow.steps.training.distributed.operator_env``). Output lines are
    prefixed ``[pod-<rank>]``. When a pod exits non-zero the others are stopped and its code is
    returned; past ``timeout`` seconds every pod is stopped and TimeoutError raised.
    """
    if nnodes <= 0 or nproc_per_node <= 0:
        raise ConfigError(f"need nnodes and nproc_per_node >= 1, got {nnodes} and {nproc_per_node}")
    port = master_port or free_port()
    lock = threading.Lock()
    procs: list[subprocess.Popen[bytes]] = []
    pumps: list[threading.Thread] = []
    try:
        for rank in range(nnodes):
            pod_env = {**os.environ, **(env or {}), **operator_env(
                node_rank=rank, nnodes=nnodes, nproc_per_node=nproc_per_node,
                master_addr=LOCAL_MASTER_ADDR, master_port=port)}
            proc = subprocess.Popen(list(pod_command), env=pod_env, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, start_new_session=True)
            procs.append(proc)
            assert proc.stdout is not None
            pump = threading.Thread(target=_pump, args=(proc.stdout, f"[pod-{rank}] ", lock), daemon=True)
            pump.start()
            pumps.append(pump)
        log.info("started %d local pods (master 127.0.0.1:%d, %d process(es) each)", nnodes, port, nproc_per_node)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            codes = [p.poll() for p in procs]
            failed = [(rank, code) for rank, code in enumerate(codes) if code not in (None, 0)]
            if failed:
                rank, code = failed[0]
                log.error("pod-%d exited with %d; stopping the other pods", rank, code)
                _stop(procs)
                return int(code)
            if all(code == 0 for code in codes):
                return 0
            if deadline is not None and time.monotonic() > deadline:
                _stop(procs)
                raise TimeoutError(f"local pods still running after {timeout:.0f}s; stopped them")
            time.sleep(0.2)
    finally:
        _stop(procs)
        for pump in pumps:
            pump.join(timeout=5)
