"""Real servers for the many-machines tests: a throw-away PostgreSQL cluster and
``mlflow server`` on it, both on loopback ports. Used by the tests and by
``bench/many_machines.py``; nothing here is mocked."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from src.local_server import LOOPBACK, free_port, start, stop, wait_until_up
from src.ui import LEAN_ENVIRONMENT, server_command

PASSWORD = "s3cret-Pa55"
USER = "mlplab"


def postgres_bin() -> Path:
    """The folder of PostgreSQL's server programs (Debian keeps them off the PATH)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).resolve().parent
    raise RuntimeError("PostgreSQL's server programs are missing: install Debian's postgresql (bash .ci/run does)")


@dataclass
class Postgres:
    """A PostgreSQL cluster in ``root``, listening on 127.0.0.1:``port``."""

    root: Path
    port: int

    def url(self, database: str, password: bool = True, driver: str = "postgresql") -> str:
        secret = f":{PASSWORD}" if password else ""
        return f"{driver}://{USER}{secret}@127.0.0.1:{self.port}/{database}"

    def _run(self, *command: str) -> None:
        prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        done = subprocess.run([*prefix, *command], capture_output=True, text=True, timeout=120)
        if done.returncode:
            raise RuntimeError(f"{Path(command[0]).name} failed ({done.returncode}): {done.stderr.strip()[-1000:]}")

    @classmethod
    def start(cls, databases: tuple[str, ...]) -> Postgres:
        """A new cluster in a fresh folder under the system's temporary directory
        (pytest's own are private to root, and initdb refuses to run as root: as
        root, the cluster runs as the ``postgres`` user)."""
        root = Path(tempfile.mkdtemp(prefix="mlplab-postgres-"))
        if os.geteuid() == 0:
            shutil.chown(root, "postgres", "postgres")
        cluster = cls(root, free_port())
        (root / "pw").write_text(PASSWORD)
        if os.geteuid() == 0:
            shutil.chown(root / "pw", "postgres", "postgres")
        binaries = postgres_bin()
        cluster._run(
            str(binaries / "initdb"), "-D", str(root / "data"), "-U", USER, f"--pwfile={root / 'pw'}",
            "--auth-host=scram-sha-256", "--auth-local=trust", "-E", "UTF8",
        )
        cluster._run(
            str(binaries / "pg_ctl"), "-D", str(root / "data"), "-l", str(root / "log"), "-w",
            "-o", f"-p {cluster.port} -k {root} -c listen_addresses=127.0.0.1 -c max_connections=200",
            "start",
        )
        for database in databases:
            cluster._run(str(binaries / "createdb"), "-h", str(root), "-p", str(cluster.port), "-U", USER, database)
        return cluster

    def stop(self) -> None:
        self._run(str(postgres_bin() / "pg_ctl"), "-D", str(self.root / "data"), "-m", "immediate", "stop")
        shutil.rmtree(self.root, ignore_errors=True)


@dataclass
class MlflowServer:
    """``mlflow server`` on a PostgreSQL backend store, serving artifacts itself."""

    process: subprocess.Popen
    uri: str

    @classmethod
    def start(
        cls, backend_uri: str, artifacts: Path, log_path: Path, workers: int = 2, port: int | None = None
    ) -> MlflowServer:
        """Starts the server (on ``port``, to start one again where it was) and waits until it answers."""
        port = port or free_port()
        command = [*server_command(backend_uri, LOOPBACK, port, workers), "--artifacts-destination", str(artifacts)]
        process = start(command, log_path, LEAN_ENVIRONMENT)
        uri = f"http://{LOOPBACK}:{port}"
        wait_until_up(process, f"{uri}/health", timeout=180)
        return cls(process, uri)

    def stop(self) -> None:
        stop(self.process)
