"""Layer 6: one run from its config — composition, validation, the console, the app."""
