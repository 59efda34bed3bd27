"""Watch a sweep: ``python -m src.dashboard sweeps/<name>.yaml [port=8080] [host=127.0.0.1]
[storage=URL] [study_name=S]``.

Serves optuna-dashboard on the sweep's study storage (the local journal under
``mlruns/optuna/`` unless ``storage=`` names another, as for ``src.sweep``),
bound to 127.0.0.1 unless ``host=`` says otherwise. It can run while the sweep
does: the dashboard reads what the workers write. Ctrl-C stops it.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

from src.errors import ConfigError, MlplabError, report
from src.local_server import LOOPBACK, ensure_port_free
from src.options import parse_options, port_number, text

USAGE = "python -m src.dashboard sweeps/<name>.yaml [port=8080] [host=127.0.0.1] [storage=URL] [study_name=S]"
OPTIONS = {"port": port_number, "host": text, "storage": text, "study_name": text}
DEFAULTS = {"port": 8080, "host": LOOPBACK}


def open_sweep_storage(spec_path: str, storage: str | None, study_name: str | None) -> tuple[Any, str, str]:
    """The study storage of a sweep file, its study name, and how to show the storage.

    Raises:
        ConfigError: the sweep file is invalid, or its local study does not exist yet.
    """
    from src.sweeps.spec import load_spec
    from src.sweeps.storage import describe, journal_path, open_storage

    spec = load_spec(spec_path, study_name=study_name, storage=storage)
    storage = spec.storage
    journal = journal_path(storage, spec.study_name)
    if journal is not None and not journal.exists():
        raise ConfigError(
            f"no study {spec.study_name} at {journal} yet: start it with python -m src.sweep {spec_path}"
        )
    opened = open_storage(
        storage,
        spec.study_name,
        heartbeat_interval=spec.heartbeat_interval,
        heartbeat_grace=spec.heartbeat_grace,
    )
    return opened, spec.study_name, describe(storage, spec.study_name)


def make_server(storage: Any, host: str, port: int) -> Any:
    """optuna-dashboard's WSGI app on a threaded wsgiref server, bound and ready.

    As ``optuna_dashboard.run_server`` does, but without a log line on the console
    for every request the page makes (several per second while a study runs).
    """
    from socketserver import ThreadingMixIn
    from wsgiref.simple_server import WSGIRequestHandler, WSGIServer
    from wsgiref.simple_server import make_server as wsgi_server

    from optuna_dashboard import wsgi

    class QuietHandler(WSGIRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

    class ThreadingServer(ThreadingMixIn, WSGIServer):
        daemon_threads = True

    return wsgi_server(host, port, wsgi(storage), server_class=ThreadingServer, handler_class=QuietHandler)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = sys.argv[1:] if argv is None else argv
        (spec_path,), given, overrides = parse_options(args, OPTIONS, USAGE, positional=1)
        if overrides:
            raise ConfigError(f"unknown option {overrides[0]}; usage: {USAGE}")
        storage, study_name, shown = open_sweep_storage(
            spec_path, given.get("storage") or None, given.get("study_name") or None
        )
        host, port = (given.get(key, DEFAULTS[key]) for key in ("host", "port"))
        ensure_port_free(host, port, f"choose another port: python -m src.dashboard {spec_path} port={port + 1}")
        server = make_server(storage, host, port)
    except MlplabError as exc:
        return report(exc)
    except KeyboardInterrupt:
        return 130
    print(f"Optuna dashboard: http://{host}:{port}/dashboard  (study {study_name} in {shown}; Ctrl-C stops it)",
          flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("stopped", file=sys.stderr)
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
