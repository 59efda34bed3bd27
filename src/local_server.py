"""What the browsing commands (``src.ui``, ``src.dashboard``) share: ``key=value``
options, a port checked before anything starts, and a server process that is
known to answer before its address is printed."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from src.errors import ConfigError, MlplabError, report

LOOPBACK = "127.0.0.1"


class ServerError(MlplabError):
    """A server could not be started or did not answer."""


def ensure_port_free(host: str, port: int, retry_hint: str) -> None:
    """Fails with a readable line when ``host:port`` cannot be bound."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # As the servers themselves bind: a port whose last connections are in
        # TIME_WAIT is free, one with a listener is not.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise ConfigError(f"cannot listen on {host}:{port} ({exc.strerror}); {retry_hint}") from None


def free_port(host: str = LOOPBACK) -> int:
    """A port nothing listens on now (for tests and examples)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def treat_termination_as_interrupt() -> None:
    """Makes SIGTERM and SIGHUP (``kill``, a closed terminal) end the command as
    Ctrl-C does, so the server it started is stopped rather than orphaned."""

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, interrupt)


def start(command: Sequence[str], log_path: Path, env: Mapping[str, str] | None = None) -> subprocess.Popen:
    """Starts a server in a process group of its own (so stopping it stops its
    workers), its output going to ``log_path``: a pipe nobody reads would fill up
    and block a long-running server."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w") as log_file:
        process = subprocess.Popen(
            list(command),
            env={**os.environ, **(env or {})},
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    process.log_path = log_path  # type: ignore[attr-defined]
    return process


def _last_line(process: subprocess.Popen) -> str:
    """The server log's last non-empty line, or its exit code."""
    path: Path | None = getattr(process, "log_path", None)
    lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()] if path else []
    return lines[-1].strip() if lines else f"exit code {process.returncode}"


def wait_until_up(process: subprocess.Popen, url: str, timeout: float = 120) -> None:
    """Waits until ``url`` answers 200, failing early if the server process exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ServerError(f"the server stopped before it answered: {_last_line(process)}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.2)
    stop(process)
    raise ServerError(f"the server did not answer {url} within {timeout:g} s")


def stop(process: subprocess.Popen, grace: float = 10) -> None:
    """Stops the server's process group: SIGTERM, then SIGKILL after ``grace`` seconds."""
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(grace)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    except ProcessLookupError:
        pass


def serve_until_interrupted(process: subprocess.Popen, banner: str) -> int:
    """Prints ``banner`` and waits for Ctrl-C (or the server's own exit)."""
    print(banner, flush=True)
    try:
        code = process.wait()
    except KeyboardInterrupt:
        stop(process)
        print("stopped", file=sys.stderr)
        return 0
    return report(MlplabError(f"the server exited (code {code}): {_last_line(process)}"))
