"""Layer 3: the training loop, resume checkpoints, trained artefacts, stop signals, tracking."""
