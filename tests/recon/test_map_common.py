"""What both MAPs share: the misfit std with a model error."""

import pytest
import torch

from pa_recon.errors import PAReconError
from pa_recon.recon import total_sigma


def test_total_sigma_adds_the_model_error_in_quadrature():
    y = torch.tensor([[3.0, -4.0], [0.0, 0.0]], dtype=torch.float64)  # RMS √12.5 and 0
    sigma = torch.tensor([0.5, 0.25], dtype=torch.float64)
    expected = torch.tensor([(0.25 + 0.01 * 12.5) ** 0.5, 0.25], dtype=torch.float64)
    torch.testing.assert_close(total_sigma(y, sigma, 0.1), expected, rtol=1e-15, atol=0)
    assert torch.equal(total_sigma(y, sigma, 0.0), sigma)
    with pytest.raises(PAReconError, match="model_error"):
        total_sigma(y, sigma, -0.1)
