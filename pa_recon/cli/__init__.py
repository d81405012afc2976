"""``pa-recon``: the command-line tool. Thin: parse, load, call a layer, write.

Settings come from params.yaml files (``--params``), so DVC stages and users share one source of
configuration. User errors print one line naming the file and field and exit with status 2; no partial
output file is left behind. Each module here registers its own sub-commands.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from pa_recon import __version__
from pa_recon.cli import flows, pat, priors, sr
from pa_recon.cli.common import prepare_outputs, remove_empty_folders
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
    for command in sub.choices.values():
        command.formatter_class = _DefaultsHelp
    return parser


class _DefaultsHelp(argparse.HelpFormatter):
    """Help that ends each optional argument with its default, where it has one worth showing."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        hidden = action.default is None or action.default is False or action.default == argparse.SUPPRESS
        shown = action.option_strings and not action.required and not hidden
        return f"{action.help} (default: %(default)s)" if shown else action.help


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``pa-recon``; returns the exit status."""
    args = build_parser().parse_args(argv)
    created: list[Path] = []
    with warnings.catch_warnings():
        warnings.showwarning = _show_warning
        try:
            created = prepare_outputs(args)
            args.func(args)
        except PAReconError as err:
            status, message = 2, f"error: {err}"
        except OSError as err:  # e.g. a disk that filled up or went read-only while writing
            status, message = 2, f"error: {err.filename}: {err.strerror or err}" if err.filename else f"error: {err}"
        except KeyboardInterrupt:
            status, message = 130, f"interrupted{getattr(args, 'on_interrupt', '')}"
        else:
            return 0
    remove_empty_folders(created)
    print(f"pa-recon: {message}", file=sys.stderr)
    return status


def _show_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                  file: TextIO | None = None, line: str | None = None) -> None:
    """A warning as one line for the user, without the source location and line."""
    print(f"pa-recon: warning: {message}", file=sys.stderr if file is None else file)


if __name__ == "__main__":
    sys.exit(main())
