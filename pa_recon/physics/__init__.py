"""The measurement model y = A p0 + noise for a linear array; geometry conventions are in ``geometry``."""

from pa_recon.physics.geometry import Grid, LinearArray
from pa_recon.physics.operator import PATOperator
from pa_recon.physics.simulate import MeasurementSimulator, estimate_noise_sigma, noise_sigma
from pa_recon.physics.timestepping import KSpaceTimeStepper

__all__ = ["Grid", "KSpaceTimeStepper", "LinearArray", "MeasurementSimulator", "PATOperator",
           "estimate_noise_sigma", "noise_sigma"]
