"""Clean exits: `inferd serve` is a small supervisor over the server process.

The server runs as a child in a process group of its own; vLLM's engine core and workers, and
anything else it starts, join that group. Whatever ends the server — SIGTERM or SIGINT at any
moment (while models load, compile or serve), a crash, the kernel's OOM killer — the
supervisor then ends the whole group: SIGTERM, and SIGKILL for whatever is left after
``grace_s``. No process of the server outlives it.

Inside the server, after the HTTP server has shut down (usage flushed, engines stopped),
``reap_children`` ends any child still running and the process exits at once, without
waiting on a model load still running in a thread.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time

log = logging.getLogger("inferd.supervisor")

GRACE_S = 20.0  # the server's own graceful shutdown (10 s for open connections) plus the engines'


def supervise(argv: list[str], grace_s: float = GRACE_S) -> int:
    """Run ``argv`` (the server) in its own process group; end the group when it ends or when
    told to stop. Returns the server's exit code."""
    child = subprocess.Popen(argv, start_new_session=True)
    stopping = {"at": None}

    def forward(signum, _frame):
        if stopping["at"] is None:
            stopping["at"] = time.monotonic()
        try:
            os.kill(child.pid, signum)
        except ProcessLookupError:
            pass

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, forward)
    code = None
    while code is None:
        try:
            code = child.wait(timeout=0.5)
        except subprocess.TimeoutExpired:
            if stopping["at"] is not None and time.monotonic() - stopping["at"] > grace_s:
                log.error("the server did not stop within %.0f s; killing it", grace_s)
                _signal_group(child.pid, signal.SIGKILL)
    end_group(child.pid)
    return code if code >= 0 else 128 - code


def _signal_group(pgid: int, signum: int) -> bool:
    try:
        os.killpg(pgid, signum)
        return True
    except (ProcessLookupError, PermissionError):
        return False


def _group_alive(pgid: int) -> bool:
    return _signal_group(pgid, 0)


def end_group(pgid: int, grace_s: float = 5.0) -> None:
    """SIGTERM every process left in the group, then SIGKILL what is still there after ``grace_s``."""
    if not _signal_group(pgid, signal.SIGTERM):
        return
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        if not _group_alive(pgid):
            return
        time.sleep(0.05)
    _signal_group(pgid, signal.SIGKILL)


def reap_children(grace_s: float = 5.0) -> None:
    """End every descendant of this process (vLLM's engine core and workers left by a model that
    was still loading, or that did not shut down): SIGTERM, then SIGKILL after ``grace_s``."""
    import psutil

    children = psutil.Process().children(recursive=True)
    if not children:
        return
    log.info("ending %d child processes", len(children))
    for child in children:
        try:
            child.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(children, timeout=grace_s)
    for child in alive:
        try:
            child.kill()
        except psutil.NoSuchProcess:
            pass


def exit_now(code: int) -> None:
    """Exit without waiting for threads (a model load still running has no one to serve)."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
