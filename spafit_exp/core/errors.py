"""The one error type the user sees as a single line (exit code 2): the bottom of the import graph."""


class ConfigError(ValueError):
    """A bad config value or a missing file; the message is one line naming the key or path."""


class RecipeMismatch(ConfigError):
    """A run directory holds a run of another recipe: refused in one line; in a sweep, only that job is."""


class RunInterrupted(KeyboardInterrupt):
    """SIGINT/SIGTERM stopped a run after checkpointing it; `signum` gives the exit code (128 + signum)."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.signum = signum
