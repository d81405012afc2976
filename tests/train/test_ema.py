"""The parameter EMA: its update formula with the warm-up decay, swapping the averages in, and its state."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pa_recon.train.ema import EMA


class TwoWeights(nn.Module):
    """A trainable weight pair, a frozen parameter and a buffer, in float64."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.tensor([1.0, -2.0], dtype=torch.float64))
        self.frozen = nn.Parameter(torch.tensor([5.0], dtype=torch.float64), requires_grad=False)
        self.register_buffer("count", torch.tensor([7.0], dtype=torch.float64))


def set_weights(model: TwoWeights, values: list[float]) -> None:
    """Overwrite the trainable weights, as an optimiser step would."""
    with torch.no_grad():
        model.w.copy_(torch.tensor(values, dtype=torch.float64))


def test_two_updates_follow_the_warm_up_decay_by_hand():
    model = TwoWeights()
    ema = EMA(model, decay=0.15)
    assert set(ema.shadow) == {"w"}  # frozen parameters and buffers are not averaged

    set_weights(model, [3.0, 0.0])
    ema.update(model)  # n = 0: d = min(0.15, 1/10) = 0.1, shadow = 0.1·[1, −2] + 0.9·[3, 0]
    torch.testing.assert_close(ema.shadow["w"], torch.tensor([2.8, -0.2], dtype=torch.float64))

    set_weights(model, [-1.0, 4.0])
    ema.update(model)  # n = 1: d = min(0.15, 2/11) = 0.15, shadow = 0.15·[2.8, −0.2] + 0.85·[−1, 4]
    torch.testing.assert_close(ema.shadow["w"], torch.tensor([-0.43, 3.37], dtype=torch.float64))
    assert ema.updates == 2


def test_applied_swaps_the_averages_in_and_restores_the_trained_weights():
    model = TwoWeights()
    ema = EMA(model, decay=0.5)
    set_weights(model, [4.0, 6.0])
    ema.update(model)  # d = min(0.5, 0.1) = 0.1: shadow = [3.7, 5.2]
    with ema.applied(model):
        torch.testing.assert_close(model.w.detach(), torch.tensor([3.7, 5.2], dtype=torch.float64))
    torch.testing.assert_close(model.w.detach(), torch.tensor([4.0, 6.0], dtype=torch.float64), rtol=0, atol=0)

    with pytest.raises(RuntimeError, match="inside"), ema.applied(model):
        raise RuntimeError("inside")
    torch.testing.assert_close(model.w.detach(), torch.tensor([4.0, 6.0], dtype=torch.float64), rtol=0, atol=0)
    assert float(model.frozen) == 5.0 and float(model.count) == 7.0


def test_state_round_trip_continues_the_same_average():
    model = TwoWeights()
    ema = EMA(model, decay=0.9)
    set_weights(model, [0.0, 1.0])
    ema.update(model)
    restored = EMA(TwoWeights(), decay=0.9)
    restored.load_state_dict(ema.state_dict())
    assert restored.updates == 1
    set_weights(model, [2.0, 2.0])
    for average in (ema, restored):
        average.update(model)  # both use the second warm-up decay 2/11
    torch.testing.assert_close(restored.shadow["w"], ema.shadow["w"], rtol=0, atol=0)


def test_state_with_other_parameter_names_is_refused():
    ema = EMA(TwoWeights(), decay=0.9)
    state = {"shadow": {"v": torch.zeros(2, dtype=torch.float64)}, "updates": 3}
    with pytest.raises(KeyError, match=r"\['v', 'w'\]"):
        ema.load_state_dict(state)
    assert ema.updates == 0
