"""The one error type the user sees as a single line (exit code 2): the bottom of the import graph."""


class ConfigError(ValueError):
    """A bad config value or a missing file; the message is one line naming the key or path."""


class RecipeMismatch(ConfigError):
    """A run directory holds a run of another recipe: refused in one line; in a sweep, only that job is."""
