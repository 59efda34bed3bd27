"""What every sweep worker imports before its job, imported once by the fork
server that several workers of one command are forked from (see
:func:`src.sweeps.workers.start_workers`): what
:func:`~src.sweeps.workers.import_for_trials` imports, and MLflow's SQL store.
Importing this module is the whole of its job.

Nothing here may start TensorFlow's runtime, a Python thread or a connection:
the workers are forked from this state, and each sets its own TensorFlow threads.
(The native thread pools that NumPy's and SciPy's OpenBLAS and pyarrow's jemalloc
start on import are idle, and each library handles a fork.)
"""

from __future__ import annotations

import ctypes
import signal
import sys

# The fork server shares the terminal's process group: a Ctrl-C during these
# imports must not kill it with a traceback. The workers forked from it set their
# own handler first thing; the command stops them.
signal.signal(signal.SIGINT, signal.SIG_IGN)

# A command that stops before its workers are forked (a bad storage URL, Ctrl-C)
# takes the server with it at once, rather than leaving it to finish seconds of
# imports first (it would exit then, once it sees the command gone). Linux only
# (prctl); workers forked from the server do not inherit the setting.
if sys.platform == "linux":
    _PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)

from src.sweeps.workers import import_for_trials  # noqa: E402

import_for_trials()
