"""The prior protocol's condition helpers: the prepared condition is detached data, repeated per sample in order."""

from __future__ import annotations

import torch
from gaussian_prior import gaussian_case

from pa_recon.recon.prior_protocol import prior_condition, repeat_condition


def test_prior_condition_is_the_prepared_condition_detached(dense_op):
    case = gaussian_case(dense_op, [0.05] * 2, conditional=True)
    y = case.y.clone().requires_grad_()
    (features,) = prior_condition(case.prior, dense_op, y)
    torch.testing.assert_close(features, case.prior.condition(dense_op, case.y).flatten(1))
    assert not features.requires_grad
    assert prior_condition(gaussian_case(dense_op, [0.05]).prior, dense_op, case.y) is None


def test_repeat_condition_repeats_each_scan_k_times_in_a_row():
    image = torch.arange(3.0).reshape(3, 1, 1, 1)
    features = [torch.arange(3.0).reshape(3, 1), 10 + torch.arange(6.0).reshape(3, 2)]
    assert repeat_condition(image, 2).flatten().tolist() == [0, 0, 1, 1, 2, 2]
    first, second = repeat_condition(features, 2)
    assert first.flatten().tolist() == [0, 0, 1, 1, 2, 2]
    assert second.tolist() == [[10, 11], [10, 11], [12, 13], [12, 13], [14, 15], [14, 15]]
    assert repeat_condition(None, 4) is None
