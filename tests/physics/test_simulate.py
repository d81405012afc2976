import pytest
import torch

from pa_recon.errors import PAReconError
from pa_recon.physics import Grid, LinearArray, MeasurementSimulator, estimate_noise_sigma, noise_sigma

GRID = Grid(nx=10, nz=8, dx=1e-4)
ARRAY = LinearArray.uniform(8, 1.2e-4, fs=30e6, n_samples=40, center_frequency=5e6, element_width=1e-4)


def test_noise_sigma_follows_the_snr_definition_on_clean_data():
    clean = torch.stack([torch.full((4, 5), 2.0), torch.full((4, 5), -3.0)])
    sigma = noise_sigma(clean, torch.tensor([20.0, 40.0]))
    torch.testing.assert_close(sigma, torch.tensor([0.2, 0.03]))


def test_simulated_noise_has_the_requested_level_and_is_seeded():
    sim = MeasurementSimulator(GRID, ARRAY, refine=2, dtype=torch.float64)
    assert sim.fine_grid == GRID.refined(2)
    p0 = torch.rand(2, 1, 16, 20, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    y1, sigma = sim.simulate(p0, 10.0, torch.Generator().manual_seed(5))
    y2, _ = sim.simulate(p0, 10.0, torch.Generator().manual_seed(5))
    assert torch.equal(y1, y2)
    clean = sim.operator(p0)
    measured = (y1 - clean).pow(2).mean(dim=(1, 2)).sqrt()
    torch.testing.assert_close(measured, sigma, rtol=0.1, atol=0)
    snr = 20 * torch.log10(clean.pow(2).mean(dim=(1, 2)).sqrt() / sigma)
    torch.testing.assert_close(snr, torch.full((2,), 10.0, dtype=torch.float64))


def test_refinement_below_two_is_the_inverse_crime_and_is_refused():
    with pytest.raises(PAReconError) as err:
        MeasurementSimulator(GRID, ARRAY, refine=1)
    assert err.value.field == "refine"


def test_coarse_phantom_on_the_fine_simulator_is_rejected():
    sim = MeasurementSimulator(GRID, ARRAY, refine=2)
    with pytest.raises(PAReconError) as err:
        sim.simulate(torch.zeros(1, 1, 8, 10), 20.0)
    assert err.value.field == "p0"


def test_noise_estimate_recovers_white_noise_under_a_smooth_signal():
    gen = torch.Generator().manual_seed(3)
    t = torch.linspace(0, 1, 2000, dtype=torch.float64)
    signal = torch.stack([torch.sin(2 * torch.pi * 3 * t) * 5, torch.zeros_like(t)])[:, None, :].repeat(1, 4, 1)
    sigma = torch.tensor([0.05, 0.2], dtype=torch.float64)
    y = signal + sigma[:, None, None] * torch.randn(signal.shape, generator=gen, dtype=torch.float64)
    torch.testing.assert_close(estimate_noise_sigma(y), sigma, rtol=0.05, atol=0)


#: The pipeline's sensor band (3.5 MHz, fractional bandwidth 0.8, 30 MHz sampling): out of band above ~10.7 MHz.
BAND_LIMITED = dict(fs=30e6, center_frequency=3.5e6, fractional_bandwidth=0.8)


def test_noise_estimate_of_white_noise_uses_the_bins_above_the_band():
    array = LinearArray.uniform(64, 1e-4, n_samples=1000, **BAND_LIMITED)
    sigma = torch.tensor([0.3, 2.0], dtype=torch.float64)
    noise = torch.randn(2, 64, 1000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    torch.testing.assert_close(estimate_noise_sigma(sigma[:, None, None] * noise, array), sigma, rtol=0.03, atol=0)


def test_noise_estimate_is_not_biased_by_band_limited_signal_near_nyquist():
    grid = Grid(nx=24, nz=24, dx=1e-4)
    array = LinearArray.uniform(24, 1e-4, n_samples=128, element_width=1e-4, **BAND_LIMITED)
    sim = MeasurementSimulator(grid, array, refine=2, dtype=torch.float64)
    # A pixel-random phantom is broadband, so the sensor passes signal up to its band edge, near Nyquist.
    p0 = torch.rand(2, 1, 48, 48, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    y, sigma = sim.simulate(p0, 40.0, torch.Generator().manual_seed(0))
    torch.testing.assert_close(estimate_noise_sigma(y, array), sigma, rtol=0.15, atol=0)
    assert torch.all(estimate_noise_sigma(y) > 2 * sigma)  # second differences see the in-band signal


def test_noise_estimate_falls_back_to_second_differences_without_out_of_band_bins():
    y = torch.randn(2, 8, 40, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    ideal = LinearArray.uniform(8, 1e-4, fs=30e6, n_samples=40)
    assert torch.equal(estimate_noise_sigma(y, ideal), estimate_noise_sigma(y))
    # ARRAY's 5 MHz band reaches past 15 MHz Nyquist: no bin is out of band.
    assert torch.equal(estimate_noise_sigma(y, ARRAY), estimate_noise_sigma(y))
    # 4 out-of-band bins per 40-sample trace: one element is too few for a median, eight are enough.
    banded = LinearArray.uniform(8, 1e-4, n_samples=40, **BAND_LIMITED)
    assert torch.equal(estimate_noise_sigma(y[:, :1], banded), estimate_noise_sigma(y[:, :1]))
    assert not torch.equal(estimate_noise_sigma(y, banded), estimate_noise_sigma(y))


@pytest.mark.parametrize("shape", [(8, 40), (1, 1, 8, 40), (1, 8, 2)])
def test_noise_estimate_rejects_data_that_are_not_scans_of_traces(shape):
    with pytest.raises(PAReconError) as err:
        estimate_noise_sigma(torch.zeros(shape), ARRAY)
    assert err.value.field == "y"
