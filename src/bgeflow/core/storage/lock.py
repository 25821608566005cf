"""One writer per output: a lock object beside the outputs, for the whole time a run writes them.

- Local outputs: ``flock`` on ``<output>/.bgeflow-lock.json``. The kernel drops the lock when its
  process dies, so a crashed run never blocks the next one (its file stays, and is simply locked
  again). A release deletes the file while still holding the lock, and every taker checks that the
  file it locked is still the one at that name (else it locked a deleted inode: it tries again), so
  two processes never hold two different inodes of one name. A folder the lock itself created
  (the output did not exist yet) is removed again on release when nothing else was written to it:
  a run refused before writing anything leaves no empty output behind.
- S3 outputs: a conditional put (``If-None-Match: *``) of that object, holding the owner and an
  expiry that a heartbeat thread pushes forward. A lock past its expiry belongs to a run that
  died, and is taken over; so is one left by an earlier container of this very pod (same host,
  its process gone: a restarted PyTorchJob pod keeps its hostname), so a restart is not refused.

The object is hidden (leading ``.``): listings of the output never show it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
import time
import uuid
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from bgeflow.core.errors import ConflictError
from bgeflow.core.storage.base import Store
from bgeflow.core.storage.local import LocalStore

log = logging.getLogger(__name__)

LOCK_KEY = ".bgeflow-lock.json"
#: How long an S3 lock outlives its last heartbeat: a crashed run blocks its output this long at most.
DEFAULT_TTL_S = 120.0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


class OutputLock:
    """Held while a run writes ``store``; a context manager (see the module docstring)."""

    def __init__(self, store: Store, *, owner: str = "", ttl_s: float = DEFAULT_TTL_S) -> None:
        self.store = store
        self.ttl_s = ttl_s
        self.token = uuid.uuid4().hex
        self.info: dict[str, Any] = {"owner": owner, "host": socket.gethostname(), "pid": os.getpid(),
                                     "token": self.token}
        self._fh: IO[str] | None = None
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None
        self.lost = False
        #: The outermost folder the local lock created (the output's root or an ancestor), else None.
        self._created: Path | None = None

    # ------------------------------------------------------------------ public

    def acquire(self) -> OutputLock:
        """Take the lock or refuse.

        Raises:
            ConflictError: another live run holds it (the message names that run and, on S3, until when).
        """
        if isinstance(self.store, LocalStore):
            self._acquire_local(self.store)
        else:
            self._acquire_remote()
        return self

    def release(self) -> None:
        """Give the lock back (a lock no longer ours is left alone)."""
        if self._fh is not None:
            import fcntl

            assert isinstance(self.store, LocalStore)
            # Deleted while still locked: a process waiting on this inode sees it gone (_acquire_local).
            with contextlib.suppress(OSError):
                (self.store.root / LOCK_KEY).unlink()
            with contextlib.suppress(OSError):
                fcntl.flock(self._fh, fcntl.LOCK_UN)
            self._fh.close()
            self._fh = None
            self._remove_created(self.store.root)
            return
        self._stop.set()
        if self._beat is not None:
            self._beat.join(timeout=10)
            self._beat = None
        try:
            held = self._read()
            if held is not None and held.get("token") == self.token:
                self.store.delete(LOCK_KEY)
        except Exception as exc:  # an expired lock is taken over anyway; never fail a finished run here
            log.warning("could not release %s: %s", self.store.url(LOCK_KEY), exc)

    def __enter__(self) -> OutputLock:
        return self.acquire()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.release()

    # ------------------------------------------------------------------ local

    def _acquire_local(self, store: LocalStore) -> None:
        import fcntl

        root = store.root.absolute()
        missing = [folder for folder in (root, *root.parents) if not folder.exists()]
        store.root.mkdir(parents=True, exist_ok=True)
        self._created = missing[-1] if missing else None
        path = store.root / LOCK_KEY
        for _attempt in range(10):
            fh = open(path, "a+", encoding="utf-8")  # noqa: SIM115 - held until release()
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                fh.seek(0)
                holder = fh.read().strip() or "another process"
                fh.close()
                self._remove_created(store.root)
                raise ConflictError(f"{store.uri} is being written by another run ({holder}); wait for it to "
                                    "finish or write to another output") from None
            try:
                current = os.stat(path).st_ino
            except FileNotFoundError:
                current = None
            if current == os.fstat(fh.fileno()).st_ino:
                break
            fh.close()  # released (and deleted) between our open and our flock: lock the new file
        else:
            raise ConflictError(f"{store.uri}: the lock file keeps being replaced by other runs; retry")
        fh.seek(0)
        fh.truncate()
        fh.write(json.dumps({**self.info, "acquired": time.time()}))
        fh.flush()
        self._fh = fh

    def _remove_created(self, root: Path) -> None:
        """Remove the folders the lock created, from ``root`` up, while they are empty."""
        if self._created is None:
            return
        folder = root.absolute()
        while True:
            try:
                folder.rmdir()
            except OSError:  # not empty (the run wrote its outputs), or already gone
                return
            if folder == self._created:
                return
            folder = folder.parent

    # ------------------------------------------------------------------ S3

    def _read(self) -> dict[str, Any] | None:
        if not self.store.exists(LOCK_KEY):
            return None
        try:
            held = json.loads(self.store.read_text(LOCK_KEY))
        except ValueError:
            return {}  # unreadable: treated as expired
        return held if isinstance(held, dict) else {}

    def _body(self) -> str:
        now = time.time()
        return json.dumps({**self.info, "acquired": now, "expires": now + self.ttl_s})

    def _stale(self, held: dict[str, Any]) -> str | None:
        """Why ``held`` belongs to a run that is gone, or None while it may be alive."""
        expires = held.get("expires")
        if not isinstance(expires, int | float) or expires < time.time():
            return "expired"
        if held.get("host") == self.info["host"] and isinstance(held.get("pid"), int):
            if held["pid"] == os.getpid():
                return "left by an earlier process of this container"
            if not _alive(held["pid"]):
                return "its process on this host is gone"
        return None

    def _acquire_remote(self) -> None:
        for _attempt in range(2):
            try:
                self.store.write_text(LOCK_KEY, self._body(), if_absent=True)
                break
            except FileExistsError:
                held = self._read()
                if held is None:
                    continue  # released in between: try again
                reason = self._stale(held)
                if reason is None:
                    until = time.strftime("%H:%M:%S UTC", time.gmtime(held["expires"]))
                    raise ConflictError(
                        f"{self.store.uri} is being written by another run ({held.get('owner') or '?'} on "
                        f"{held.get('host')}, pid {held.get('pid')}; lock held until at least {until}): wait for "
                        "it to finish or write to another output") from None
                log.warning("taking over the lock %s (%s): %s", self.store.url(LOCK_KEY), reason, held)
                self.store.delete(LOCK_KEY)
        else:
            raise ConflictError(f"{self.store.uri}: another run took the lock at the same moment; retry")
        self._stop.clear()
        self._beat = threading.Thread(target=self._heartbeat, name="bgeflow-lock", daemon=True)
        self._beat.start()

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.ttl_s / 4):
            try:
                held = self._read()
                if held is None or held.get("token") != self.token:
                    self.lost = True
                    log.error("lost the lock %s to %s: another run may now write this output",
                              self.store.url(LOCK_KEY), held)
                    return
                self.store.write_text(LOCK_KEY, self._body())
            except Exception as exc:  # a flaky store: try again on the next beat, before the expiry
                log.warning("could not renew %s: %s", self.store.url(LOCK_KEY), exc)


def output_lock(store: Store, *, owner: str = "", ttl_s: float = DEFAULT_TTL_S) -> OutputLock:
    """The lock of the output ``store`` (not yet taken: use it as ``with output_lock(store):``)."""
    return OutputLock(store, owner=owner, ttl_s=ttl_s)
