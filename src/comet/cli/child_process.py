"""What LocalBroker and EtcdProcess share: one child process with a log file, stopped by PID."""

from __future__ import annotations

import signal
import subprocess
import tempfile
from pathlib import Path
from types import TracebackType
from typing import Self


class ChildProcess:
    """A child process we start, pause, stop (SIGTERM, then SIGKILL) or kill like a crash.

    Subclasses set `log_path`, optionally `_tmp` (a temporary directory to
    remove in cleanup), and implement `start`.
    """

    log_path: Path
    _tmp: tempfile.TemporaryDirectory[str] | None = None

    def __init__(self) -> None:
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 20.0) -> Self:
        """Start the process and wait until it serves."""
        raise NotImplementedError

    @property
    def pid(self) -> int:
        """Process id of the running child."""
        assert self.proc is not None
        return self.proc.pid

    @property
    def running(self) -> bool:
        """True while the process is alive."""
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout_s: float = 10.0) -> int:
        """SIGTERM and wait; returns the exit code (kills after `timeout_s`)."""
        if self.proc is None:
            return 0
        proc, self.proc = self.proc, None
        if proc.poll() is None:
            proc.send_signal(signal.SIGCONT)  # a paused process cannot handle SIGTERM
            proc.send_signal(signal.SIGTERM)
            try:
                return proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                raise
        return proc.returncode

    def kill(self) -> None:
        """SIGKILL, as a crash."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def pause(self) -> None:
        """SIGSTOP: the process stops answering; its connections and leases stay open."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT after `pause`."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def cleanup(self) -> None:
        """Kill if running and remove a temporary data directory."""
        self.kill()
        if self._tmp is not None:
            self._tmp.cleanup()

    def log_text(self) -> str:
        """Everything the process logged."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            self.stop()
        finally:
            self.cleanup()
