"""The supervisor between ``mmss explore`` and Voila: it dies with its parent, however the parent dies.

``mmss explore`` stops Voila itself on Ctrl-C or SIGTERM, but a parent killed with SIGKILL (or
by the out-of-memory killer) runs no clean-up: Voila, re-parented to PID 1, kept serving with its
kernels, and the temporary notebook folder stayed. So the parent starts this supervisor
(``python -m mmss_lib.explore.serve PARENT_PID TMP_DIR -- VOILA_COMMAND...``), which

- asks the kernel for a parent-death signal (``prctl(PR_SET_PDEATHSIG, SIGTERM)`` on Linux), set
  before it runs any code of its own and re-checked against a parent that died meanwhile, and
  watches its parent's PID twice a second as well (systems without ``prctl``);
- starts Voila with the same parent-death signal (Voila gets SIGTERM if the supervisor itself is
  killed), and
- on its parent's death, SIGTERM or SIGINT stops Voila as Ctrl-C does (SIGTERM: Voila shuts its
  kernels down; SIGKILL after 10 s, then any kernel left is killed) and removes the temporary
  notebook folder, then exits.
"""

from __future__ import annotations

import os
import signal
import sys

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
WATCH_S = 0.5  # how often the parent's PID is checked


def set_parent_death_signal(sig: int = signal.SIGTERM) -> bool:
    """Ask the kernel to send ``sig`` to this process when its parent dies (Linux ``prctl``);
    False where that is not available. Safe in a ``preexec_fn`` (no allocation beyond ctypes)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _child_preexec() -> None:
    set_parent_death_signal(signal.SIGTERM)


def stop_server(proc, timeout: float = 10) -> None:
    """Stop a Voila child as Ctrl-C does: SIGTERM (Voila shuts its kernels down and removes its
    connection files), SIGKILL after ``timeout`` s; then whatever it started (kernels) and left
    running is killed too."""
    import subprocess

    import psutil

    try:
        family = psutil.Process(proc.pid).children(recursive=True)  # kernels and their children
    except psutil.Error:
        family = []
    if proc.poll() is None:
        proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    _, alive = psutil.wait_procs(family, timeout=5)
    for p in alive:
        try:
            p.kill()
        except psutil.Error:
            pass


def supervise(parent_pid: int, tmp_dir: str, command: list[str]) -> int:
    """Run ``command`` (Voila) until it ends, the parent ``parent_pid`` dies, or this process gets
    SIGTERM / SIGINT; then stop it and remove ``tmp_dir``. Returns Voila's exit status (or 128 +
    the signal that stopped it)."""
    import shutil
    import subprocess

    stop = {"signal": None}

    def on_signal(signum, frame):
        stop["signal"] = signum

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    set_parent_death_signal(signal.SIGTERM)
    proc = None
    try:
        if os.getppid() != parent_pid:  # the parent died before the death signal was set
            return 128 + signal.SIGTERM
        proc = subprocess.Popen(command, preexec_fn=_child_preexec)
        while stop["signal"] is None:
            try:
                return proc.wait(timeout=WATCH_S)
            except subprocess.TimeoutExpired:
                pass
            if os.getppid() != parent_pid:  # the watchdog, where no death signal exists
                stop["signal"] = signal.SIGTERM
        return 128 + int(stop["signal"])
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        if proc is not None:
            stop_server(proc)
        shutil.rmtree(tmp_dir, ignore_errors=True)


def supervisor_command(parent_pid: int, tmp_dir, command: list[str]) -> list[str]:
    """The command line that runs ``command`` under :func:`supervise`."""
    return [sys.executable, "-m", "mmss_lib.explore.serve", str(int(parent_pid)), str(tmp_dir), "--", *command]


def main(argv: list[str]) -> int:
    if len(argv) < 4 or argv[2] != "--":
        print("usage: python -m mmss_lib.explore.serve PARENT_PID TMP_DIR -- COMMAND...", file=sys.stderr)
        return 2
    return supervise(int(argv[0]), argv[1], argv[3:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
