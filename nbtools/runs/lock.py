"""One writer per run folder: `RunLock` holds the file `nbtools.lock` in it while `fit` trains.

Two processes training into one folder mix their checkpoints, and the second one's start-up cleans
away the first one's temp files. The lock file names its holder (pid, host, start time) so a refusal
can say who holds it. A holder that died without releasing it (SIGKILL, a Colab disconnect) leaves a
stale lock, taken over with a warning: on the same host when its pid is gone (or now belongs to
another process), on another host (a new Colab runtime on the same Drive folder) when its heartbeat,
the file's mtime refreshed every HEARTBEAT_S seconds by the holder, is older than STALE_AFTER_S.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from nbtools.runs.files import LOCK_FILE
from nbtools.wording import Reworded

log = logging.getLogger(__name__)

HEARTBEAT_S = 30.0
STALE_AFTER_S = 600.0  # ten missed heartbeats, with room for Drive's sync delay and clock skew


class RunLockedError(Reworded, RuntimeError):
    """Another process holds the run folder's lock; the message names it and what to do."""


def _process_start(pid: int) -> str | None:
    """The kernel's start time of `pid` (Linux), to tell a live holder from a new process that got its pid."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]  # field 22, counted after the command name


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


class RunLock:
    """`with RunLock(run_dir): ...` holds the folder's lock, or raises RunLockedError naming the holder."""

    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / LOCK_FILE
        self.token = uuid.uuid4().hex
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        me = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
            "process_start": _process_start(os.getpid()),
            "token": self.token,
        }
        for _ in range(5):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                self._take_over_if_stale()
                continue
            with os.fdopen(fd, "w") as f:
                json.dump(me, f)
                f.flush()
                os.fsync(f.fileno())
            self._beat = threading.Thread(target=self._heartbeat, name="nbtools-run-lock", daemon=True)
            self._beat.start()
            return
        raise RunLockedError(f"could not take the lock {self.path}: other processes keep taking it")

    def release(self) -> None:
        self._stop.set()
        if self._beat is not None:
            self._beat.join()
            self._beat = None
        holder = self._read()
        if holder is not None and holder.get("token") == self.token:
            self.path.unlink(missing_ok=True)

    def _heartbeat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            try:
                os.utime(self.path)
            except OSError as e:  # deleted by hand, or Drive unmounted: say so, keep training
                log.warning("could not refresh the run lock %s: %s", self.path, e)

    def _read(self) -> dict | None:
        try:
            holder = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return None
        return holder if isinstance(holder, dict) else None

    def _take_over_if_stale(self) -> None:
        holder = self._read()
        if holder is None:
            time.sleep(0.2)  # another process may be between creating the file and writing it
            holder = self._read()
            if holder is None:
                if not self.path.exists():
                    return  # released meanwhile: try again
                raise RunLockedError(
                    f"{self.path.parent} has a lock file {self.path} that names no holder; if no process "
                    f"is training into this folder, delete {self.path} and run again"
                )
        stale = self._stale_because(holder)
        who = (
            f"pid {holder.get('pid')} on host {holder.get('host')!r}, started {holder.get('started')} "
            f"(lock file {self.path})"
        )
        if stale is None:
            raise RunLockedError(
                f"{self.path.parent} is being trained into by another process: {who}. Only one process may "
                f"write a run folder; wait for it to finish or stop it, or train into another run_dir. If no "
                f"process is using it, delete {self.path} (a lock from another host goes stale "
                f"{STALE_AFTER_S / 60:.0f} minutes after its holder's last heartbeat)"
            )
        # Move it aside rather than delete it: of two processes taking over at once, one rename wins.
        aside = self.path.with_name(f".{LOCK_FILE}.stale{os.getpid()}")
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return
        try:
            moved = json.loads(aside.read_text())
        except ValueError:
            moved = {}
        if not isinstance(moved, dict) or moved.get("token") != holder.get("token"):
            # a fresh lock, taken between our read and our rename: put it back
            os.rename(aside, self.path)
            return
        aside.unlink()
        log.warning("took over the stale lock of %s in %s: %s", who, self.path.parent, stale)

    def _stale_because(self, holder: dict) -> str | None:
        """Why the holder no longer trains (a sentence), or None while it may."""
        pid, host = holder.get("pid"), holder.get("host")
        if host == socket.gethostname() and isinstance(pid, int):
            if not _pid_alive(pid):
                return f"process {pid} no longer runs"
            now = _process_start(pid)
            if now is not None and holder.get("process_start") not in (None, now):
                return f"process {pid} ended; its pid now belongs to another process"
            return None
        try:
            silent = time.time() - self.path.stat().st_mtime
        except FileNotFoundError:
            return "it was released"
        if silent > STALE_AFTER_S:
            return f"its holder on host {host!r} has not refreshed it for {silent / 60:.0f} minutes"
        return None


@dataclass(frozen=True)
class LockState:
    """A run folder's lock as a reader sees it: its holder (pid, host, started; {} when the file names
    none) and why that holder no longer trains (None while it may: the run is running)."""

    holder: dict
    stale: str | None

    @property
    def live(self) -> bool:
        return self.stale is None


def read_lock(run_dir: Path) -> LockState | None:
    """The lock of `run_dir` without taking it, None when there is none. A lock its holder left behind
    (a kill, a Colab disconnect) is stale, by the rules RunLock takes one over with."""
    lock = RunLock(Path(run_dir))
    if not lock.path.exists():
        return None
    holder = lock._read()
    if holder is None:
        return LockState({}, f"the lock file {lock.path} names no holder")
    return LockState(holder, lock._stale_because(holder))
