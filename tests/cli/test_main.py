"""The ``pa-recon`` entry point: version, help, one-line errors and warnings, and the checks of output paths."""

from __future__ import annotations

import argparse
import errno
import os
import signal
import subprocess
import sys
import time
import warnings
from importlib.metadata import version

import pytest

import pa_recon
from pa_recon import console
from pa_recon.cli import build_parser, common, main, pat


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


def test_the_entry_point_leaves_the_slow_imports_to_the_commands_that_use_them():
    # Every pa-recon run and every dask worker pays its imports; plotting, statistics, signal filters and skimage
    # cost seconds on a small CPU and serve only some commands.
    slow = ("matplotlib", "scipy.stats", "scipy.signal", "skimage.transform")
    code = f"import sys; import pa_recon.cli, pa_recon.batch; print(' '.join(m for m in {slow} if m in sys.modules))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert loaded == []


def test_every_option_of_every_sub_command_has_help_and_shows_its_default():
    parser = build_parser()
    (commands,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    for name, command in commands.choices.items():
        text = " ".join(command.format_help().split())
        for action in command._actions:
            if not action.option_strings or action.dest == "help":
                continue
            assert action.help, f"{name} {action.option_strings[0]} has no help"
            if not action.required and action.default not in (None, False):
                assert f"(default: {action.default})" in text, f"{name} {action.option_strings[0]}"


def test_sub_command_help_shows_the_defaults_worth_showing(capsys):
    with pytest.raises(SystemExit):
        main(["reconstruct", "--help"])
    out = " ".join(capsys.readouterr().out.split())  # unwrapped
    assert "scans per chunk (default: 16)" in out and "(default: 0)" in out and "(default: local)" in out
    assert "(default: None)" not in out and "(default: False)" not in out


def test_a_missing_measurement_file_is_one_line_and_status_2(tmp_path, capsys):
    missing = tmp_path / "missing.h5"
    assert main(["reconstruct", str(missing), "--method", "bp", "--out", str(tmp_path / "r.h5")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("pa-recon: error:") and "missing.h5" in err and "\n" not in err
    assert not (tmp_path / "r.h5").exists()


@pytest.fixture
def params_file(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("test_sets: {}\n")
    return path


def run_main(args: list, capsys) -> tuple[int, str]:
    status = main([str(a) for a in args])
    return status, capsys.readouterr().err.strip()


def test_an_output_that_is_an_input_is_refused_and_the_input_kept(params_file, capsys):
    before = params_file.read_bytes()
    status, err = run_main(["phantoms", "--params", params_file, "--set", "x", "--out", params_file], capsys)
    assert status == 2 and err == f"pa-recon: error: {params_file}: --out: is also an input of this command; " \
                                  "writing it would destroy that input"
    assert params_file.read_bytes() == before


@pytest.mark.parametrize("make, message", [
    (lambda d: (d / "folder.h5").mkdir() or d / "folder.h5", "is a folder; give a file name"),
    (lambda d: d / "p.yaml" / "sub" / "o.h5", "cannot create it: "),
])
def test_an_output_file_that_cannot_be_a_file_is_refused_before_any_work(params_file, tmp_path, capsys, make,
                                                                          message):
    out = make(tmp_path)
    status, err = run_main(["phantoms", "--params", params_file, "--set", "x", "--out", out], capsys)
    assert status == 2 and message in err and "--out" in err and "\n" not in err


def test_an_output_folder_that_is_a_file_is_refused(params_file, capsys):
    status, err = run_main(["train-prior", "--kind", "marginal", "--params", params_file, "--out-dir", params_file],
                           capsys)
    assert status == 2 and err.endswith("--out-dir: is a file; give a folder")


def test_an_unwritable_place_is_refused_and_no_folder_is_left(params_file, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(common.os, "access", lambda path, mode: False)
    status, err = run_main(["report", params_file, "--out", tmp_path / "new" / "deeper" / "r.md"], capsys)
    assert status == 2 and f"cannot write into {tmp_path} (read-only or no permission)" in err
    assert not (tmp_path / "new").exists()


def test_an_os_error_while_working_is_one_line_and_the_new_folders_go(params_file, tmp_path, capsys, monkeypatch):
    def disk_full(args):
        raise OSError(errno.ENOSPC, "No space left on device", args.out)

    monkeypatch.setattr(pat, "cmd_report", disk_full)
    out = tmp_path / "new" / "r.md"
    status, err = run_main(["report", params_file, "--out", out], capsys)
    assert status == 2 and err == f"pa-recon: error: {out}: No space left on device"
    assert not (tmp_path / "new").exists()


def test_a_warning_is_one_line_without_source_code(params_file, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(pat, "cmd_report", lambda args: warnings.warn("the prior was trained for another array"))
    status, err = run_main(["report", params_file, "--out", tmp_path / "r.md"], capsys)
    assert status == 0 and err == "pa-recon: warning: the prior was trained for another array"


def test_a_bad_reconstruction_name_is_refused_before_any_work(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(pat, "reconstruct_chunks", lambda *args, **kwargs: pytest.fail("reconstructed"))
    status, err = run_main(["reconstruct", tmp_path / "m.h5", "--method", "bp", "--name", "a/b",
                            "--out", tmp_path / "r.h5"], capsys)
    assert status == 2 and err.startswith("pa-recon: error: --name: 'a/b' cannot name a reconstruction")


def test_dask_options_without_the_distributed_scheduler_are_ignored_with_a_warning(tmp_path, capsys):
    status, err = run_main(["reconstruct", tmp_path / "m.h5", "--method", "bp", "--workers", "4",
                            "--out", tmp_path / "r.h5"], capsys)
    assert status == 2 and err.splitlines()[0] == ("pa-recon: warning: --address and --workers apply to "
                                                   "--scheduler distributed only; they are ignored")


def test_one_worker_with_the_local_scheduler_is_no_warning(tmp_path, capsys):
    status, err = run_main(["reconstruct", tmp_path / "m.h5", "--method", "bp", "--workers", "1",
                            "--out", tmp_path / "r.h5"], capsys)
    assert status == 2 and err.startswith("pa-recon: error:") and "warning" not in err


def test_a_folder_given_as_the_measurement_file_is_called_a_folder(tmp_path, capsys):
    status, err = run_main(["reconstruct", tmp_path, "--method", "bp", "--out", tmp_path / "r.h5"], capsys)
    assert status == 2 and err == f"pa-recon: error: {tmp_path}: /: is a folder, not a file"


def test_ctrl_c_while_the_tool_starts_is_one_line_and_status_130(monkeypatch, capsys):
    import pa_recon.cli

    def interrupted_import(argv=None):
        raise KeyboardInterrupt

    monkeypatch.setattr(pa_recon.cli, "main", interrupted_import)
    assert console.run() == 130
    assert capsys.readouterr().err == "pa-recon: interrupted\n"


def test_sigterm_stops_the_tool_as_ctrl_c_does_with_status_143(monkeypatch, capsys):
    import pa_recon.cli

    def terminated(argv=None):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler interrupts this at once
        return 0

    monkeypatch.setattr(pa_recon.cli, "main", terminated)
    monkeypatch.setattr(console, "_TERMINATED", False)
    previous = signal.getsignal(signal.SIGTERM)
    try:
        start = time.perf_counter()
        assert console.run() == 143
        assert time.perf_counter() - start < 4
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert capsys.readouterr().err == "pa-recon: interrupted\n"
