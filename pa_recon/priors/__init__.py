"""Normalizing flows wrapped as image priors for PAT: a marginal ``p(x)`` and a UNet-conditional ``p(x | c)``.

One class, :class:`FlowPrior`, serves both (conditional when its flow has a condition channel). Conventions:

* images ``x`` are ``(B, 1, nz, nx)`` in phantom units (vessels in ``[0, 1]``); ``nll`` is in nats per image
  and is defined for every real ``x`` (a soft logit, :class:`SoftLogit`, maps the real line onto the flow's
  input);
* latents are whitened (standard-normal priors), so ``generate`` of ``N(0, I)`` draws samples the prior;
* the condition is ``c = Aᵀy / max|Aᵀy|`` per scan (:meth:`FlowPrior.condition`), invariant to the data
  amplitude;
* prior files (:func:`save_prior` / :func:`load_prior`) hold the weights and the settings, the grid and the
  array; :func:`check_geometry` compares them with the data's geometry.

Training (:mod:`pa_recon.priors.training`): :func:`make_training_pairs` simulates ``(x, y)`` pairs without the
inverse crime at random SNRs; :func:`train_prior` fits a prior with the shared trainer and writes ``prior.pt``;
:func:`cached_training_set` keeps the data of an interrupted training for its resumption.
"""

from pa_recon.priors.checkpoint import check_geometry, geometry_differences, load_prior, save_prior
from pa_recon.priors.pretransform import SoftLogit
from pa_recon.priors.prior import CONDITION_NORMALISATION, FlowPrior, default_flow_config, flow_config_for
from pa_recon.priors.training import (
    DEQUANT_SIGMA,
    cached_training_set,
    make_training_images,
    make_training_pairs,
    train_prior,
)

__all__ = [
    "CONDITION_NORMALISATION",
    "DEQUANT_SIGMA",
    "FlowPrior",
    "SoftLogit",
    "cached_training_set",
    "check_geometry",
    "default_flow_config",
    "flow_config_for",
    "geometry_differences",
    "load_prior",
    "make_training_images",
    "make_training_pairs",
    "save_prior",
    "train_prior",
]
