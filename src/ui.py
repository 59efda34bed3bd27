"""Browse the runs: ``python -m src.ui [port=5000] [host=127.0.0.1] [key=value ...]``.

Starts the MLflow UI (``mlflow server``) on the project's tracking store, the
``tracking.uri`` of the composed config: ``mlruns/mlflow.db`` unless
``MLFLOW_TRACKING_URI`` or an override such as ``tracking.uri=...`` says
otherwise. It binds to 127.0.0.1 unless ``host=`` says otherwise, and runs lean
for a 2-core machine: one worker process, no background job runners. The
address is printed once the UI answers; Ctrl-C stops it.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from src.errors import MlplabError, report
from src.local_server import (
    LOOPBACK,
    ensure_port_free,
    serve_until_interrupted,
    start,
    stop,
    treat_termination_as_interrupt,
    wait_until_up,
)
from src.options import parse_options, port_number, text

USAGE = "python -m src.ui [port=5000] [host=127.0.0.1] [tracking.uri=URI] [key=value ...]"
OPTIONS = {"port": port_number, "host": text}
DEFAULTS = {"port": 5000, "host": LOOPBACK}
LOG_PATH = Path("mlruns") / "logs" / "ui.log"
LEAN_ENVIRONMENT = {
    # MLflow 3 starts a Huey job consumer and periodic tasks beside the server by
    # default (for GenAI jobs); a browsing UI needs neither.
    "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
    "MLFLOW_SERVER_JOB_ENABLE_PERIODIC_TASKS": "false",
    "MLFLOW_DISABLE_TELEMETRY": "true",
}


def store_uri(overrides: Sequence[str]) -> str:
    """The tracking URI of the config composed with ``overrides``."""
    from src.config import compose

    return str(compose(list(overrides)).tracking.uri)


def server_command(uri: str, host: str, port: int, workers: int = 1) -> list[str]:
    """``mlflow server`` on the store ``uri`` (one worker process for browsing). For
    a local SQLite store, experiments created in the UI keep their artifacts beside
    the others."""
    from src.tracking import sqlite_path

    command = [
        sys.executable, "-m", "mlflow", "server",
        "--backend-store-uri", uri,
        "--host", host,
        "--port", str(port),
        "--workers", str(workers),
    ]
    db_path = sqlite_path(uri)
    if db_path is not None:
        command += ["--default-artifact-root", (db_path.parent / "artifacts").resolve().as_uri()]
    return command


def main(argv: Sequence[str] | None = None) -> int:
    process = None
    try:
        _, given, overrides = parse_options(sys.argv[1:] if argv is None else argv, OPTIONS, USAGE)
        uri = store_uri(overrides)
        from src.tracking import redact, sqlite_path

        if uri.startswith(("http://", "https://")):
            print(f"The tracking URI {redact(uri)} is an MLflow server: its UI is at that address.")
            return 0
        host, port = (given.get(key, DEFAULTS[key]) for key in ("host", "port"))
        ensure_port_free(host, port, f"choose another port: {USAGE.split(' [')[0]} port={port + 1}")
        db_path = sqlite_path(uri)
        if db_path is not None:
            if not db_path.exists():
                print(f"No runs yet at {db_path}: start with python -m src.train +experiment=xor")
            # Created (or upgraded) here, under the store's lock, not by the server
            # racing a training that starts at the same moment.
            from src.tracking import connect

            connect(uri)
        treat_termination_as_interrupt()
        process = start(server_command(uri, host, port), LOG_PATH, LEAN_ENVIRONMENT)
        address = f"http://{host}:{port}"
        print(f"Starting the MLflow UI on {redact(uri)} ...", flush=True)
        wait_until_up(process, f"{address}/health")
    except MlplabError as exc:
        return report(exc)
    except KeyboardInterrupt:
        if process is not None:
            stop(process)
        return 130
    return serve_until_interrupted(process, f"MLflow UI: {address}  (log: {LOG_PATH}; Ctrl-C stops it)")


if __name__ == "__main__":
    sys.exit(main())
