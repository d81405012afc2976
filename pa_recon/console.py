"""The ``pa-recon`` console script. It imports the command line (and with it torch, which takes seconds) inside
:func:`run`, so that Ctrl-C while the tool starts ends it with the same one line as Ctrl-C later."""

from __future__ import annotations

import sys


def run() -> int:
    """Run ``pa-recon`` with the process's arguments; returns the exit status (130 when interrupted)."""
    try:
        from pa_recon.cli import main

        return main()
    except KeyboardInterrupt:
        print("pa-recon: interrupted", file=sys.stderr)
        return 130
