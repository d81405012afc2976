"""The repo's DVC pipelines: what DVC does not cache (metrics, tables, small plots) must be committed to git, or
``dvc metrics diff``, ``dvc plots diff`` and ``dvc exp show`` have nothing to compare across commits."""

import subprocess
from pathlib import Path

import pytest
import yaml
from dvc.repo import Repo

ROOT = Path(__file__).resolve().parents[1]


def uncached_outputs() -> list[tuple[str, str]]:
    """``(stage, path relative to the repo)`` of every output with ``cache: false`` in every ``dvc.yaml``."""
    with Repo(str(ROOT)) as repo:
        return [(stage.addressing, str(Path(out.fs_path).relative_to(ROOT)))
                for stage in repo.index.stages for out in stage.outs if not out.use_cache]


def git_ignores(path: str) -> bool:
    """Whether git ignores ``path`` (relative to the repo root; need not exist)."""
    result = subprocess.run(["git", "check-ignore", "-q", "--no-index", path], cwd=ROOT, check=False)
    if result.returncode not in (0, 1):
        pytest.fail(f"git check-ignore failed with status {result.returncode}: the tests must run in a git checkout")
    return result.returncode == 0


def test_every_pipeline_has_uncached_metrics():
    paths = [path for _, path in uncached_outputs()]
    for metrics in ("outputs/procedural/metrics.json", "outputs/report/results.md",
                    "pipelines/mnist/results/smoke/metrics.json", "pipelines/sr/results/metrics.json"):
        assert metrics in paths


def test_uncached_outputs_are_not_git_ignored():
    ignored = [f"{stage}: {path}" for stage, path in uncached_outputs() if git_ignores(path)]
    assert not ignored, f"git ignores these cache: false outputs, so no commit holds them: {ignored}"


def test_the_per_scan_csvs_are_drawn_by_the_top_level_plots_alone():
    """A file under a stage's ``plots`` also gets DVC's default chart (its last column against the row number)
    besides the top-level definitions that draw it."""
    top = yaml.safe_load((ROOT / "dvc.yaml").read_text())["plots"]
    drawn = {Path(file) for plot in top if isinstance(plot, dict) for spec in plot.values() for file in spec["y"]}
    with Repo(str(ROOT)) as repo:
        stage_plots = {Path(out.fs_path).relative_to(ROOT) for stage in repo.index.stages for out in stage.outs
                       if out.plot}
    assert drawn and not [str(f) for f in drawn if stage_plots & {f, *f.parents}]
