"""The ``pa-recon`` console script. It imports the command line (and with it torch, which takes seconds) inside
:func:`run`, so that Ctrl-C while the tool starts ends it with the same one line as Ctrl-C later. SIGTERM (what
``timeout``, ``kill`` and job schedulers send) stops it the same way, so a training marks its MLflow run as
killed and can resume."""

from __future__ import annotations

import signal
import sys
from types import FrameType

_TERMINATED = False


def _terminate(signum: int, frame: FrameType | None) -> None:
    global _TERMINATED
    _TERMINATED = True
    raise KeyboardInterrupt


def run() -> int:
    """Run ``pa-recon`` with the process's arguments; returns the exit status (130 when interrupted, 143 when
    terminated)."""
    signal.signal(signal.SIGTERM, _terminate)
    try:
        from pa_recon.cli import main

        status = main()
    except KeyboardInterrupt:
        print("pa-recon: interrupted", file=sys.stderr)
        status = 130
    return 128 + signal.SIGTERM if _TERMINATED and status == 130 else status
