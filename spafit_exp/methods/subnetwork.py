"""An element-level sub-network as config keys describe it: which tensors are candidates (`method.candidates`) and
its size k (`method.k` / `method.fraction` for per-step methods, `selector.k` / `selector.fraction` for fixed
subsets). Checks before any weights load, and the size once the candidates are known, with a bad one reported
as the key that set it. The rules themselves are the kernels' (`ops.masking`), which raise ValueError."""

from __future__ import annotations

from spafit_exp.core.errors import ConfigError
from spafit_exp.ops.masking import CANDIDATES, subnetwork_size


def check_candidates(which: str) -> None:
    if which not in CANDIDATES:
        raise ConfigError(f"method.candidates={which}: must be one of {', '.join(CANDIDATES)}")


def check_size_options(k, fraction, key: str) -> None:
    """Range checks of `<key>.k` / `<key>.fraction`, before any weights load."""
    if k is not None and not (isinstance(k, int) and k >= 1):
        raise ConfigError(f"{key}.k={k}: must be an integer >= 1")
    if fraction is not None and not 0 < fraction <= 1:
        raise ConfigError(f"{key}.fraction={fraction}: must be in (0, 1]")


def subset_size(k: int | None, fraction: float | None, n: int, default: int, key: str) -> int:
    """`subnetwork_size` of n candidates; ConfigError `<key>.k=...` when it is not in [1, n]."""
    try:
        return subnetwork_size(k, fraction, n, default)
    except ValueError as err:  # the kernel names no config group: the caller knows which one set k
        raise ConfigError(f"{key}.{err}") from None
