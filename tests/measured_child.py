"""Run a command in a child process and measure its own wall time and peak RSS.

Linux carries a process's peak RSS across fork and exec (``exec_mmap`` keeps the old address space's high
water mark), so a command started straight from pytest reports at least pytest's own peak, which grows
with the suite (it reached 1.04 GB on CI and failed every "< 1 GB" check at once). A small launcher starts
the command instead: the command forks from a 10 MB process, and the ``wait4`` the launcher does on it
gives the command's own peak, its children included.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

_LAUNCHER = """
import os, sys
report = int(sys.argv[1])
os.set_inheritable(report, False)
pid = os.posix_spawn(sys.argv[2], sys.argv[2:], os.environ)
_, status, usage = os.wait4(pid, 0)
os.write(report, str(usage.ru_maxrss).encode())
sys.exit(os.waitstatus_to_exitcode(status))
"""


@dataclass(frozen=True)
class Measured:
    """A finished command: exit code, output, wall seconds and its own peak resident memory in MB."""

    code: int
    stdout: str
    stderr: str
    seconds: float
    rss_mb: float

    @property
    def error_lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.strip()]


def run_measured(
    argv: list[str],
    *,
    env: dict[str, str] | None = None,
    preexec: Callable[[], None] | None = None,
    timeout: float = 60,
) -> Measured:
    """Run ``argv`` (``argv[0]`` a full path) through the launcher; kill it and its command after ``timeout``.

    >>> run_measured([sys.executable, "-c", "print(1)"]).stdout
    '1\\n'
    """
    read_end, write_end = os.pipe()
    started = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-c", _LAUNCHER, str(write_end), *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        pass_fds=(write_end,),
        preexec_fn=preexec,
        start_new_session=True,  # one process group, so a timeout stops the command too
    )
    os.close(write_end)
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
    seconds = time.monotonic() - started
    with os.fdopen(read_end, "rb") as report:
        peak_kb = int(report.read() or 0)
    return Measured(proc.returncode, stdout, stderr, seconds, peak_kb / 1024)
