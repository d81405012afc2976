import numpy as np

from pa_recon.physics.analytic import gaussian_pressure, gaussian_source
from pa_recon.physics.geometry import Grid, LinearArray


def test_reference_solution_starts_as_the_gaussian_itself():
    sigma, xc, zc = 2e-4, 1e-4, 1e-3
    array = LinearArray(element_x=(-1e-3, 0.0, 5e-4, 2e-3), fs=30e6, n_samples=1, z_array=0.0)
    r2 = (np.asarray(array.element_x) - xc) ** 2 + zc**2
    np.testing.assert_allclose(gaussian_pressure(array, xc, zc, sigma)[:, 0], np.exp(-r2 / (2 * sigma**2)),
                               rtol=1e-8, atol=1e-12)


def test_gaussian_source_peaks_at_its_centre():
    grid = Grid(nx=9, nz=7, dx=1e-4)
    image = gaussian_source(grid, grid.x()[6], grid.z()[2], 1.5e-4)
    assert np.unravel_index(np.argmax(image), image.shape) == (2, 6)
    assert image.max() == 1.0
