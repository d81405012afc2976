"""pa_recon.cli.common: the device an option or a params setting asks for; data-path errors named by their key."""

from __future__ import annotations

import pytest
import torch

from pa_recon.cli.common import data_path_from, pick_device
from pa_recon.errors import PAReconError


@pytest.mark.parametrize("cuda, expected", [(False, "cpu"), (True, "cuda")])
def test_auto_is_cuda_where_present(monkeypatch, cuda, expected):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    assert pick_device("auto") == torch.device(expected)


@pytest.mark.parametrize("name, field, file, message", [
    ("cuda", "--device", None, "--device: CUDA was asked for but is not available; ask for 'cpu'"),
    ("cuda", "profiles.smoke.eval.device", "params.yaml",
     "params.yaml: profiles.smoke.eval.device: CUDA was asked for but is not available; ask for 'cpu'"),
    ("gpu", "--device", None, "--device: not a torch device: 'gpu'"),
])
def test_a_device_this_machine_lacks_names_the_option_or_setting(monkeypatch, name, field, file, message):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(PAReconError) as err:
        pick_device(name, field, file)
    assert str(err.value) == message and err.value.field == field and err.value.file == file


def test_a_cuda_index_beyond_the_devices_is_refused(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert pick_device("cuda:0") == torch.device("cuda:0")
    with pytest.raises(PAReconError, match="^--device: CUDA device 1 was asked for but only 1 are available$"):
        pick_device("cuda:1")


@pytest.mark.parametrize("error, expected", [
    (PAReconError("image folder not found", file="data/set14"),
     "data/set14: image folder not found (the path comes from benchmark.data_root in p.yaml)"),
    (PAReconError("vessel-mask folder does not exist", file="masks", field="root"),
     "masks: root: vessel-mask folder does not exist (the path comes from benchmark.data_root in p.yaml)"),
    (PAReconError("must be a number", file="p.yaml", field="benchmark.seed"), "p.yaml: benchmark.seed: must be a number"),
    (PAReconError("expected 3 images", field="subset"), "subset: expected 3 images"),
])
def test_errors_about_a_data_path_name_the_params_key_that_gave_it(error, expected):
    with pytest.raises(PAReconError) as err, data_path_from("p.yaml", "benchmark.data_root"):
        raise error
    assert str(err.value) == expected and err.value.field == error.field and err.value.file == error.file
