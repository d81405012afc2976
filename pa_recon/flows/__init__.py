"""Invertible building blocks and normalizing-flow models on image batches (B, C, H, W); knows nothing of
photoacoustics.

Every invertible module maps ``forward(x, cond=None) -> (z, logdet)`` and ``inverse(z, cond=None) -> (x, logdet)``
with a per-sample logdet of shape (B,). ``build_flow(FlowConfig(...))`` assembles RealNVP- or Glow-style multi-scale
models with ``log_prob``, ``bits_per_dim``, ``sample``, ``encode``/``decode`` and ``interpolate``.
"""

from pa_recon.flows.actnorm import ActNorm
from pa_recon.flows.base import Inverse, InvertibleModule, SequentialFlow
from pa_recon.flows.builders import FlowConfig, build_flow
from pa_recon.flows.conv1x1 import InvConv1x1
from pa_recon.flows.coupling import AffineCoupling
from pa_recon.flows.dequantization import UniformDequantization, VariationalDequantization
from pa_recon.flows.encoders import LabelEncoder, RRDBEncoder, UNetEncoder, one_hot_condition
from pa_recon.flows.injector import AffineInjector
from pa_recon.flows.model import Decoding, Encoding, Flow
from pa_recon.flows.pretransform import LogitTransform
from pa_recon.flows.reshape import HaarDownsample, Squeeze
from pa_recon.flows.split import GaussianPrior, Split
from pa_recon.flows.subnets import SubnetConfig

__all__ = [
    "ActNorm", "AffineCoupling", "AffineInjector", "Decoding", "Encoding", "Flow", "FlowConfig", "GaussianPrior",
    "HaarDownsample", "InvConv1x1", "Inverse", "InvertibleModule", "LabelEncoder", "LogitTransform", "RRDBEncoder",
    "SequentialFlow", "Split", "Squeeze", "SubnetConfig", "UNetEncoder", "UniformDequantization",
    "VariationalDequantization", "build_flow", "one_hot_condition",
]
