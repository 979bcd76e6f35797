"""Layer 4: the stages before a method is applied — decoder pre-tuning and parameter selectors."""
