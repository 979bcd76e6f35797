"""Layer 1: numerics that know no config — masks, sampling, optimizers, sparse and per-example gradients, unpadding."""
