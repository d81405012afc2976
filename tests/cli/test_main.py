"""The ``pa-recon`` entry point: version, help, and a missing input file."""

from __future__ import annotations

from importlib.metadata import version

import pytest

import pa_recon
from pa_recon.cli import main


def test_version_is_the_installed_package_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"pa-recon {pa_recon.__version__}"
    assert pa_recon.__version__ == version("pa_recon")


def test_help_lists_every_sub_command(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    out = capsys.readouterr().out
    assert exit_info.value.code == 0 and "photoacoustic" in out
    for command in ("phantoms", "simulate", "import-ipasc", "reconstruct", "evaluate", "report", "train-prior",
                    "flow-train", "flow-eval", "flow-report", "sr-train", "sr-eval", "sr"):
        assert command in out


def test_a_missing_measurement_file_is_one_line_and_status_2(tmp_path, capsys):
    missing = tmp_path / "missing.h5"
    assert main(["reconstruct", str(missing), "--method", "bp", "--out", str(tmp_path / "r.h5")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("pa-recon: error:") and "missing.h5" in err and "\n" not in err
    assert not (tmp_path / "r.h5").exists()
