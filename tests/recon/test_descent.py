"""What every step rule shares (recon/descent.py): a step writes its state in place, as a CUDA-graph replay needs,
and the settings every rule has are checked alike."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gaussian_prior import gaussian_case

from pa_recon.errors import PAReconError
from pa_recon.recon import AdamSettings, LBFGSSettings
from pa_recon.recon.descent import StepSettings

RULES: dict[str, tuple[StepSettings, tuple[str, ...]]] = {
    "adam": (AdamSettings(steps=5, tau=None), ("moment1", "moment2")),
    "lbfgs": (LBFGSSettings(steps=5, memory=3, tau=None), ("pairs_s", "pairs_y", "rho")),
}


def tensors(loop: object, name: str) -> list[torch.Tensor]:
    """The loop's attribute ``name``, a tensor or a list of them, as a list."""
    value = getattr(loop, name)
    return value if isinstance(value, list) else [value]


@pytest.mark.parametrize("rule", sorted(RULES))
def test_step_updates_the_state_in_place(dense_op, rule):
    settings, written = RULES[rule]
    case = gaussian_case(dense_op, [0.05, 0.1])
    loop = settings.loop(case.descent_objective(), [case.x])
    state = loop.state()
    own = {name: [t.clone() for t in tensors(loop, name)] for name in written}
    addresses = [t.data_ptr() for t in state]
    for _ in range(4):
        loop.step()
    # A graph replay writes to the addresses captured once: a step must never rebind a state tensor.
    assert [t.data_ptr() for t in loop.state()] == addresses
    assert all(a is b for a, b in zip(loop.state(), state))
    assert not torch.equal(loop.variables[0], case.x) and loop.t.item() == 4
    for name, before in own.items():
        assert any(not torch.equal(a, b) for a, b in zip(tensors(loop, name), before)), name


SHARED_BAD = [({"steps": -1}, "steps"), ({"steps": 2.5}, "steps"), ({"lr": 0.0}, "lr"), ({"lr": "fast"}, "lr"),
              ({"tau": "x"}, "tau"), ({"tau": -1.0}, "tau"), ({"check_every": 0}, "check_every"), ({"cuda_graph": 1}, "cuda_graph")]
OWN_BAD = [(AdamSettings, {"lr_decay": 0.0}, "lr_decay"), (AdamSettings, {"lr_decay": 2.0}, "lr_decay"),
           (LBFGSSettings, {"memory": 0}, "memory"), (LBFGSSettings, {"memory": 1.5}, "memory")]


@pytest.mark.parametrize("cls, settings, field",
                         [(cls, s, f) for cls in (AdamSettings, LBFGSSettings) for s, f in SHARED_BAD] + OWN_BAD)
def test_bad_settings_raise(cls, settings, field):
    with pytest.raises(PAReconError) as err:
        cls(**settings)
    assert err.value.field == field


def test_numpy_settings_are_accepted_and_stored_as_python_numbers():
    """Counts and rates computed with numpy (np.int64, np.float32) are valid, and the settings hold Python values."""
    adam = AdamSettings(steps=np.int64(5), lr=np.float32(0.5), tau=np.float64(1.0), check_every=np.int32(2),
                        lr_decay=np.float64(0.1))
    assert adam == AdamSettings(steps=5, lr=0.5, tau=1.0, check_every=2, lr_decay=0.1)
    assert [type(getattr(adam, name)) for name in ("steps", "lr", "tau", "check_every", "lr_decay")] == [
        int, float, float, int, float]
    assert type(LBFGSSettings(memory=np.int64(3)).memory) is int
