"""pa_recon: limited-view photoacoustic tomography with normalizing-flow priors."""

from pa_recon.errors import PAReconError

__all__ = ["PAReconError"]
__version__ = "0.1.0"
