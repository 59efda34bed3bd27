"""A warm process: ``python -m src.warm`` imports what mlplab's commands need
(TensorFlow, Keras, MLflow, scikit-learn, matplotlib: 6-10 s of every command)
once, then runs each command that hands its job to it in a process forked from
that state, as Gradle's daemon or a Jupyter kernel keeps its imports.

While one runs, ``python -m src.train``, ``src.sweep``, ``src.predict`` and
``src.report`` (and ``mlplab train ...``) started from any folder of the same
user hand it their job (:func:`hand_off`) and behave as if they ran it
themselves: the job gets the command's arguments, folder, environment and
terminal (its file descriptors 0-2), the command forwards its Ctrl-C to the job
and exits with the job's exit code, and a job whose command dies is interrupted
(its runs end KILLED). Without a warm process, or with ``MLPLAB_WARM=off``, a
command runs on its own, as before.

A warm process serves one checkout: a command finds it by a socket named after
the checkout's folder. It turns a job away (and the command runs on its own,
saying why) when the checkout's code or the installed libraries have changed since
it imported them (it then restarts itself once its running jobs end), when the
command comes from another checkout or runs another Python environment, or when the
command's environment sets a variable that the libraries read at import
(:data:`IMPORT_TIME_ENV`) differently.

The protocol, one Unix-socket connection per command: the command sends one JSON
line (module, argv, folder, environment, checkout, code and libraries fingerprints)
with its file descriptors 0-2 attached; the warm process answers ``started PID`` or
``refused REASON``, then ``exit CODE`` once the job has ended.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from src.errors import ConfigError, report

if TYPE_CHECKING:
    from multiprocessing.context import BaseContext

ROOT = Path(__file__).resolve().parent.parent

WARM_ENV = "MLPLAB_WARM"
"""The warm process's socket path, or ``off``; unset, the checkout's own socket."""

SERVED_COMMANDS = ("train", "sweep", "predict", "report")
"""The commands a warm process runs: ``python -m src.<command>`` or ``mlplab <command>``."""

SERVED_MODULES = (*(f"src.{command}" for command in SERVED_COMMANDS), "src.cli")

IMPORTS = (
    "matplotlib.backends.backend_agg", "mlflow.keras", "mlflow.sklearn", "mlflow.store.tracking.sqlalchemy_store",
    "skops.io", "src.models.baselines", "src.models.compiled", "src.models.keras_mlp", "src.plots", "src.train",
    "src.training", "src.sweep", "src.sweeps.trial", "src.predict", "src.report", "src.cli",
    "src.baseline_worker", "src.data.toy",
    # What the libraries import lazily during a job (a run's git tags, logging a
    # model, a contour plot, the SQLite dialect, Hydra's launcher): 209 modules, found
    # by diffing sys.modules before and after an XOR job forked from the warm process.
    "git", "mlflow.pyfunc", "filelock", "opentelemetry.sdk.metrics", "contourpy", "sqlalchemy.dialects.sqlite",
    "hydra._internal.core_plugins.basic_launcher", "hydra_plugins.mlplab_sweeper.sweeper",
)
"""What a warm process imports for its jobs besides TensorFlow and Keras: what
``python -m src.train``, the other served commands and a sweep worker import."""

IMPORT_TIME_ENV = (
    "KERAS_BACKEND", "CUDA_VISIBLE_DEVICES", "TF_ENABLE_ONEDNN_OPTS", "TF_XLA_FLAGS", "XLA_FLAGS",
    "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "PYTHONHASHSEED", "MPLBACKEND",
)
"""Environment variables read when the libraries are imported (or when Python
starts): a job forked from the warm process has the values the warm process
started with, so a command that sets them otherwise runs on its own."""

_CODE_FOLDERS = ("src", "hydra_plugins")

_in_warm_process = False
"""True in the warm process and the jobs forked from it: a job never hands itself off."""


def fork_context() -> BaseContext | None:
    """multiprocessing's fork, in a job of a warm process that runs no other thread
    and has not started TensorFlow's runtime: the job has imported all a child
    process of mlplab's needs (a sweep's worker, the baselines' process), so the
    child starts at once, as one from a fork server would. None anywhere else (a
    test or notebook may have TensorFlow's thread pools running)."""
    import multiprocessing
    import threading

    if not _in_warm_process or threading.active_count() > 1:
        return None
    from src.models.backend import import_tensorflow

    threading_config = import_tensorflow().config.threading  # imported already: the warm process did
    current = threading_config.get_inter_op_parallelism_threads()
    try:  # a change is refused once the runtime has started
        threading_config.set_inter_op_parallelism_threads(current + 1)
    except RuntimeError:
        return None
    threading_config.set_inter_op_parallelism_threads(current)
    return multiprocessing.get_context("fork")


# --- the command's side ------------------------------------------------------------


def socket_path() -> Path | None:
    """Where this checkout's warm process listens: ``MLPLAB_WARM``, or a socket in
    the user's runtime folder named after the checkout; None for ``off``."""
    chosen = os.environ.get(WARM_ENV, "")
    if chosen.lower() in ("off", "0", "no", "false"):
        return None
    if chosen:
        return Path(chosen)
    runtime = os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir()
    checkout = hashlib.sha256(str(ROOT).encode()).hexdigest()[:16]
    return Path(runtime) / f"mlplab-{os.getuid()}" / f"{checkout}.sock"


def code_fingerprint() -> str:
    """What the checkout's Python code is: its files' names, sizes and times (a
    few milliseconds for mlplab's ~70 files)."""
    digest = hashlib.sha256()
    for folder in _CODE_FOLDERS:
        for directory, dirs, files in os.walk(ROOT / folder):
            dirs[:] = sorted(d for d in dirs if d != "__pycache__")
            for name in sorted(files):
                if name.endswith(".py"):
                    stat = os.stat(os.path.join(directory, name))
                    digest.update(f"{directory}/{name}:{stat.st_size}:{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def libraries_fingerprint() -> dict[str, Any]:
    """Which Python environment runs (``sys.prefix``), and when its site-packages
    folders last changed: installing, upgrading or removing a package adds or removes
    its entries there (its ``.dist-info`` folder has the version in its name)."""
    import site

    # Real paths: one environment is often reached through a link (.venv -> .venv-ci).
    folders = [os.path.realpath(f) for f in (*site.getsitepackages(), site.getusersitepackages())]
    changed = [f"{folder}:{os.stat(folder).st_mtime_ns}" for folder in folders if os.path.isdir(folder)]
    return {"python": os.path.realpath(sys.prefix), "site_packages": changed}


def hand_off(module: str) -> None:
    """Runs this command (``python -m module`` with ``sys.argv``) in the warm
    process and exits with its exit code; returns at once when no warm process
    serves this checkout (or it turns the job away), and the command runs itself."""
    if _in_warm_process or not hasattr(socket, "send_fds"):
        return
    path = socket_path()
    if path is None or not path.exists():
        return
    connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        connection.connect(str(path))
    except OSError:  # a socket left by a warm process that was killed
        connection.close()
        return
    try:
        request = {
            "module": module, "argv": sys.argv, "cwd": os.getcwd(), "env": dict(os.environ),
            "checkout": str(ROOT), "code": code_fingerprint(), "libraries": libraries_fingerprint(),
        }
    except OSError:  # a folder deleted under the command: it fails on its own, as it would
        connection.close()
        return
    # A Ctrl-C during the hand-over waits for it: then it goes to the job, or (turned
    # away) it interrupts this command as it would have.
    held = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT}
    signal.pthread_sigmask(signal.SIG_BLOCK, held)
    streams, opened = _standard_streams()
    try:
        socket.send_fds(connection, [json.dumps(request).encode() + b"\n"], streams)
        replies = connection.makefile("rb")
        kind, _, detail = replies.readline().decode().strip().partition(" ")
    except OSError:
        kind, detail = "", ""
    finally:
        for fd in opened:
            os.close(fd)
    if kind != "started":
        connection.close()
        if kind == "refused":
            print(f"mlplab: the warm process did not take this job ({detail}); it runs on its own",
                  file=sys.stderr)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, held)
        return
    job = int(detail)

    def forward(signum: int, frame: object) -> None:
        # A terminal's Ctrl-C reaches the command's whole process group; the job's
        # group (its workers) gets it likewise. A kill reaches the command alone.
        try:
            if signum == signal.SIGTERM:
                os.kill(job, signum)
            else:
                os.killpg(job, signum)
        except ProcessLookupError:
            pass

    for signum in held:
        signal.signal(signum, forward)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, held)
    kind, _, detail = replies.readline().decode().strip().partition(" ")
    # No "exit" line: the warm process died under the job (it was killed).
    os._exit(int(detail) if kind == "exit" else 1)


def _standard_streams() -> tuple[list[int], list[int]]:
    """File descriptors 0-2 to hand over, a closed one as /dev/null, and those
    opened for that (to close once sent)."""
    streams, opened = [], []
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
            streams.append(fd)
        except OSError:
            null = os.open(os.devnull, os.O_RDWR)
            streams.append(null)
            opened.append(null)
    return streams, opened


# --- the warm process --------------------------------------------------------------


class WarmProcess:
    """Listens on ``path`` and forks a job for each command that connects."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.code = code_fingerprint()
        self.libraries = libraries_fingerprint()
        self.import_env = {name: os.environ.get(name) for name in IMPORT_TIME_ENV}
        self.jobs: dict[int, tuple[socket.socket, str, float]] = {}
        self.stale: str | None = None
        """What changed since it imported (its code, the installed libraries): it restarts."""
        self.wake_write = -1
        self.listener = _listen(path)

    def serve(self) -> None:
        """Serves until Ctrl-C (then the running jobs are waited for, and a second
        Ctrl-C interrupts them) or until what it imported is stale and no job runs."""
        import selectors

        # SIGCHLD (a job ended) and Ctrl-C wake the loop through this pipe.
        wake_read, self.wake_write = os.pipe()
        os.set_blocking(self.wake_write, False)
        signal.set_wakeup_fd(self.wake_write)
        signal.signal(signal.SIGCHLD, lambda signum, frame: None)
        selector = selectors.DefaultSelector()
        selector.register(self.listener, selectors.EVENT_READ, "listener")
        selector.register(wake_read, selectors.EVENT_READ, "wake")
        try:
            while not (self.stale and not self.jobs):
                for key, _ in selector.select(timeout=1.0):
                    if key.data == "listener":
                        self._accept(selector)
                    elif key.data == "wake":
                        os.read(wake_read, 512)
                    else:
                        self._client_spoke(key.fileobj, key.data, selector)
                self._reap(selector)
        except KeyboardInterrupt:
            self._close_listener(selector)
            self._finish_jobs(selector)
            raise
        self._close_listener(selector)
        _say(f"mlplab: warm process: {self.stale} changed; restarting")
        os.execv(sys.executable, [sys.executable, "-m", "src.warm", *sys.argv[1:]])

    def _accept(self, selector: Any) -> None:
        import selectors

        connection, _ = self.listener.accept()
        connection.settimeout(10)  # a command sends its request at once; nothing may hold the loop
        fds: list[int] = []
        try:
            message, fds, _, _ = socket.recv_fds(connection, 1 << 20, 3)
            while not message.endswith(b"\n"):
                more = connection.recv(1 << 20)
                if not more:
                    raise OSError("the command closed the connection")
                message += more
            request = json.loads(message)
        except (OSError, ValueError):
            for fd in fds:
                os.close(fd)
            connection.close()
            return
        connection.settimeout(None)
        refusal = self._refusal(request, fds)
        if refusal:
            for fd in fds:
                os.close(fd)
            with _quietly():
                connection.sendall(f"refused {refusal}\n".encode())
            connection.close()
            return
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            self._close_all(connection, selector)
            _run_job(request, fds)
        for fd in fds:
            os.close(fd)
        command = " ".join([request["module"] if request["module"] != "src.cli" else "mlplab",
                            *map(_shown, request["argv"][1:])])
        self.jobs[pid] = (connection, command, time.monotonic())
        selector.register(connection, selectors.EVENT_READ, pid)
        _say(f"mlplab: warm process: job {pid} started: {command} (in {request['cwd']})")
        with _quietly():
            connection.sendall(f"started {pid}\n".encode())

    def _refusal(self, request: dict[str, Any], fds: list[int]) -> str:
        if request.get("checkout") != str(ROOT):
            return f"it serves the checkout {ROOT}, not {request.get('checkout')}"
        libraries = request.get("libraries") or {}
        if libraries.get("python") != self.libraries["python"]:
            return f"it runs the Python environment {self.libraries['python']}, not {libraries.get('python')}"
        if self.stale is None:
            if request.get("code") != self.code:
                self.stale = "its code"
            elif libraries != self.libraries:
                self.stale = "the installed libraries"
            if self.stale is not None:
                _say(f"mlplab: warm process: {self.stale} changed; restarting once the running jobs end")
        if self.stale is not None:
            return f"{self.stale} changed since it started; it restarts itself"
        if len(fds) != 3 or request.get("module") not in SERVED_MODULES:
            return "not a command it runs"
        env = request.get("env", {})
        for name, value in self.import_env.items():
            if env.get(name) != value:
                return (f"{name}={env.get(name) or '(unset)'} here, {value or '(unset)'} in the warm process; "
                        "it is read at import")
        return ""

    def _client_spoke(self, connection: socket.socket, pid: int, selector: Any) -> None:
        """The command's end of the connection only ever closes: the command died
        (a Ctrl-C it forwards goes to the job directly). Its job is interrupted,
        as a Ctrl-C would (its runs end KILLED)."""
        with _quietly():
            if connection.recv(64):
                return
        selector.unregister(connection)
        _say(f"mlplab: warm process: job {pid}'s command is gone; interrupting it")
        with _quietly():
            os.killpg(pid, signal.SIGINT)

    def _reap(self, selector: Any) -> None:
        while self.jobs:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if pid not in self.jobs:
                continue
            connection, command, started = self.jobs.pop(pid)
            code = os.waitstatus_to_exitcode(status)
            code = 128 - code if code < 0 else code
            _say(f"mlplab: warm process: job {pid} ended (exit {code}) in {time.monotonic() - started:.1f} s")
            if connection in selector.get_map():  # not when the command has died
                selector.unregister(connection)
            with _quietly():
                connection.sendall(f"exit {code}\n".encode())
            connection.close()

    def _finish_jobs(self, selector: Any) -> None:
        """After a Ctrl-C: waits for the running jobs; a second Ctrl-C interrupts them."""
        if not self.jobs:
            return
        _say(f"mlplab: warm process: waiting for {len(self.jobs)} running job(s); Ctrl-C again interrupts them")
        try:
            while self.jobs:
                time.sleep(0.2)
                self._reap(selector)
        except KeyboardInterrupt:
            for pid in self.jobs:
                with _quietly():
                    os.killpg(pid, signal.SIGINT)
            deadline = time.monotonic() + 30
            while self.jobs and time.monotonic() < deadline:
                time.sleep(0.2)
                self._reap(selector)

    def _close_listener(self, selector: Any) -> None:
        with _quietly():
            selector.unregister(self.listener)
        self.listener.close()
        with _quietly():
            self.path.unlink()

    def _close_all(self, connection: socket.socket, selector: Any) -> None:
        """In a job: closes the warm process's listener and other commands'
        connections. The job keeps its own command's connection open: should the
        warm process die, the command still waits for its job to end."""
        signal.set_wakeup_fd(-1)
        os.close(self.wake_write)
        for key in list(selector.get_map().values()):
            if isinstance(key.fileobj, socket.socket):
                key.fileobj.close()
            else:
                os.close(key.fd)
        selector.close()


def _claim(path: Path) -> None:
    """Readies ``path`` for a new warm process: its folder is the user's own, and
    no warm process listens there (a socket left by one that was killed goes)."""
    folder = path.parent
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    if folder.stat().st_uid != os.getuid():
        raise ConfigError(f"{folder} belongs to another user: choose another socket with --socket PATH")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(path))
    except OSError:
        with _quietly():
            path.unlink()
    else:
        probe.close()
        raise ConfigError(f"a warm process already listens on {path}: commands use it; stop it first (Ctrl-C)")


def _listen(path: Path) -> socket.socket:
    _claim(path)  # again: another may have started during this one's imports
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    os.chmod(path, 0o600)
    listener.listen(64)
    return listener


def _run_job(request: dict[str, Any], fds: list[int]) -> NoReturn:
    """In the forked process: becomes the command (its folder, environment,
    terminal and arguments) and runs its module as ``python -m`` would."""
    import fcntl
    import runpy
    import traceback

    from src.errors import exit_now

    code: int | str | None = 1
    try:
        os.setsid()  # the warm process's own Ctrl-C (in its terminal) does not reach jobs
        signal.signal(signal.SIGINT, signal.default_int_handler)
        for signum in (signal.SIGTERM, signal.SIGHUP, signal.SIGCHLD, signal.SIGQUIT):
            signal.signal(signum, signal.SIG_DFL)
        # Out of the way first: a received descriptor may itself be 0, 1 or 2 (where
        # the warm process's own were closed), and the dup2s below would close it.
        moved = [fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in fds]
        for fd in fds:
            os.close(fd)
        for target, fd in enumerate(moved):
            os.dup2(fd, target)
            os.close(fd)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        sys.argv = list(request["argv"])
        # As Python puts the command's folder first (python -m), or its script's (mlplab).
        script = request["module"] == "src.cli"
        sys.path[0] = os.path.dirname(os.path.abspath(sys.argv[0])) if script else request["cwd"]
        sys.stdout.reconfigure(line_buffering=sys.stdout.isatty(),
                               write_through=bool(os.environ.get("PYTHONUNBUFFERED")))
        tempfile.tempdir = None  # chosen again from this job's TMPDIR
        # As in python -m, the module runs as __main__ only (runpy warns otherwise).
        sys.modules.pop(request["module"], None)
        runpy.run_module(request["module"], run_name="__main__", alter_sys=True)
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, (int, str)) or exc.code is None else 1
    except KeyboardInterrupt:
        code = 130
    except BaseException:  # noqa: BLE001  (as Python prints an uncaught error, then exits 1)
        traceback.print_exc()
    exit_now(code)


def _shown(arg: str) -> str:
    """A command's argument as the warm process's log shows it: a URI's password
    (``storage=postgresql://user:***@host/db``) hidden."""
    from src.tracking import redact

    if "://" not in arg:
        return arg
    key, eq, value = arg.partition("=")
    return f"{key}={redact(value)}" if eq and "://" not in key else redact(arg)


def _say(line: str) -> None:
    """A line of the warm process's own log (its standard output); a closed one
    (a terminal gone, a pipe no one reads) does not stop it."""
    with _quietly():
        print(line, flush=True)


class _quietly:
    """Suppresses OSError: a command that has gone away is not the warm process's error."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type | None, value: object, tb: object) -> bool:
        return kind is not None and issubclass(kind, OSError)


def preload() -> float:
    """Imports what the jobs need; the seconds it took. Starts no thread: jobs are
    forked from this state (as the sweep workers' fork server is, see
    :mod:`src.sweeps.preload`)."""
    import importlib

    started = time.perf_counter()
    from src.models.backend import import_tensorflow

    import_tensorflow()  # first: without its start-up lines on the terminal
    for name in IMPORTS:
        importlib.import_module(name)
    _fill_caches()
    return time.perf_counter() - started


def _fill_caches() -> None:
    """Fills what each job would otherwise fill once for itself: matplotlib's font
    lookups and text metrics (a figure drawn, not saved), and MLflow's map from
    modules to installed packages, which logging a model builds from every
    installed package's metadata (about 0.5 s; MLflow's private module state: a
    later MLflow without it only loses the saving)."""
    import matplotlib.pyplot as plt
    import numpy as np

    figure, axes = plt.subplots(layout="constrained")
    grid = np.linspace(0.0, 1.0, 5)
    shading = axes.contourf(grid, grid, np.outer(grid, grid))
    figure.colorbar(shading, ax=axes, label="$p$")
    axes.plot(grid, grid, label="line")
    axes.set(title="warm", xlabel="x", ylabel="y")
    axes.legend()
    figure.canvas.draw()
    plt.close(figure)
    try:
        from mlflow.utils import requirements_utils

        requirements_utils._init_modules_to_packages_map()
    except (ImportError, AttributeError):
        pass


def start_in_background(path: Path, log: Path, *, cwd: Path, env: dict[str, str]) -> subprocess.Popen:
    """Starts ``python -m src.warm --socket path`` as a background process of its
    own, its lines into the file ``log`` (the benchmarks' and the tests'); see
    :func:`wait_until_ready`. ``terminate()`` stops it as Ctrl-C does."""
    with open(log, "w") as out:
        return subprocess.Popen([sys.executable, "-m", "src.warm", "--socket", str(path)], cwd=cwd, env=env,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def wait_until_ready(process: subprocess.Popen, log: Path, *, readies: int = 1, timeout: float = 300) -> None:
    """Waits until the warm process started by :func:`start_in_background` has
    said it is ready ``readies`` times (a restart says it again)."""
    deadline = time.monotonic() + timeout
    while log.read_text().count("warm process ready") < readies:
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the warm process did not become ready:\n{log.read_text()}")
        time.sleep(0.05)


def main() -> int:
    """``python -m src.warm`` (``mlplab warm``): a mistake is one line and exit 2."""
    try:
        _serve_until_stopped()
    except ConfigError as exc:
        return report(exc)
    return 0


def _serve_until_stopped() -> None:
    import argparse
    import threading

    global _in_warm_process

    parser = argparse.ArgumentParser(
        prog="python -m src.warm",
        description="Keep mlplab's imports warm: commands started while this runs hand their jobs to it "
                    "and skip 6-10 s of imports. Ctrl-C stops it.",
    )
    parser.add_argument("--socket", type=Path, default=None,
                        help=f"where to listen (default: ${WARM_ENV}, or a socket named after this checkout)")
    args = parser.parse_args()
    path = args.socket or socket_path()
    if path is None:
        raise ConfigError(f"{WARM_ENV}=off: name the socket to listen on with --socket PATH")
    path = path.resolve()
    if len(str(path).encode()) > 100:  # a Unix socket's path has at most 107 bytes
        raise ConfigError(f"the socket path {path} is too long for a Unix socket: choose a shorter --socket PATH")
    _claim(path)
    _in_warm_process = True

    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    # kill (SIGTERM) and a closed terminal (SIGHUP) stop it as Ctrl-C does, so that
    # its socket goes with it; one started in the background ignores Ctrl-C.
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, stop)
    try:
        seconds = preload()
        if threading.active_count() != 1:  # a thread would not survive into the forked jobs
            raise SystemExit(f"mlplab: error: the warm process started threads {threading.enumerate()}")
        warm = WarmProcess(path)
        _say(f"mlplab: warm process ready in {seconds:.1f} s on {warm.path}: python -m src.train, src.sweep, "
             f"src.predict and src.report (or mlplab ...) started for {ROOT} now hand it their jobs. "
             "Ctrl-C stops it.")
        warm.serve()
    except KeyboardInterrupt:
        _say("mlplab: warm process stopped")


if __name__ == "__main__":
    # main runs in the module src.warm, not in __main__, so that the jobs see its
    # _in_warm_process (they import src.warm to hand off, and must not).
    from src import warm
    from src.errors import run_command

    run_command(warm.main)
