"""scripts/cluster/docker_to_oci.py, the image import of `make e2e`: its memory spool never outlives it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "cluster" / "docker_to_oci.py"


def _spools(root: Path) -> list[Path]:
    return sorted(root.glob("docker-to-oci-*"))


def test_sigterm_removes_the_spool(tmp_path: Path) -> None:
    """An interrupted `make e2e` sends SIGTERM: the spool (gigabytes of /dev/shm) must go with the process."""
    proc = subprocess.Popen([sys.executable, str(SCRIPT), "--spool", str(tmp_path)], stdin=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while not _spools(tmp_path) and time.monotonic() < deadline:  # blocked reading the (empty) stream
            time.sleep(0.05)
        assert _spools(tmp_path), "the script made no spool"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 128 + signal.SIGTERM
    finally:
        proc.kill()
        proc.wait()
    assert _spools(tmp_path) == []


def test_a_dead_runs_spool_is_removed_and_a_live_ones_kept(tmp_path: Path) -> None:
    """A run killed with SIGKILL cannot clean up: the next run removes its spool, never a live run's."""
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True).stdout.strip()
    (tmp_path / f"docker-to-oci-{dead}-abc").mkdir()
    (tmp_path / f"docker-to-oci-{os.getpid()}-def").mkdir()  # this test's process: alive
    (tmp_path / "docker-to-oci-legacy").mkdir()  # no pid in the name: not ours to judge
    proc = subprocess.run([sys.executable, str(SCRIPT), "--spool", str(tmp_path)], input=b"", capture_output=True,
                          check=False)
    assert proc.returncode != 0  # an empty stream is not an image
    assert [p.name for p in _spools(tmp_path)] == [f"docker-to-oci-{os.getpid()}-def", "docker-to-oci-legacy"]
