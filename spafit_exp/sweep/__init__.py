"""Layer 7: sweeps before and while they run — plan, status, estimates, learning-rate search, packing."""
