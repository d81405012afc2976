"""priors layer."""
