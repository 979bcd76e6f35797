"""Layer 0: what every layer shares — errors, registry, fingerprint, safe paths, the run directory and its record."""
