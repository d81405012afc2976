"""``pa-recon``: the command-line tool. Thin: parse, load, call a layer, write.

Settings come from params.yaml files (``--params``), so DVC stages and users share one source of
configuration. User errors print one line naming the file and field and exit with status 2; no partial
output file is left behind. Each module here registers its own sub-commands.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from pa_recon import __version__
from pa_recon.cli import flows, pat, priors, sr
from pa_recon.errors import PAReconError

DESCRIPTION = ("Limited-view photoacoustic reconstruction with normalizing-flow priors: simulate scans, train priors, "
               "reconstruct and evaluate; and the flow benchmarks (MNIST, CIFAR-10, super-resolution).")


def build_parser() -> argparse.ArgumentParser:
    """The ``pa-recon`` argument parser."""
    parser = argparse.ArgumentParser(prog="pa-recon", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    pat.register(sub)
    priors.register(sub)
    flows.register(sub)
    sr.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``pa-recon``; returns the exit status."""
    args = build_parser().parse_args(argv)
    for name in ("out", "metrics"):
        if getattr(args, name, None):
            Path(getattr(args, name)).parent.mkdir(parents=True, exist_ok=True)
    try:
        args.func(args)
    except PAReconError as err:
        print(f"pa-recon: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
