"""Layer 1: task files, tokenized data, metrics, models and heads."""
