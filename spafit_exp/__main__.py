"""Entry point: `python -m spafit_exp [overrides]` or `spafit-exp [overrides]`."""

import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from spafit_exp import CONF_DIR
from spafit_exp.config import check_group_overrides, check_overrides_compose, quote_path_values
from spafit_exp.errors import ConfigError, RecipeMismatch


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def _hydra_main(cfg: DictConfig) -> None:
    from spafit_exp.app import run  # torch & co. load only once the command line is known to be good

    try:
        run(cfg)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        if isinstance(err, RecipeMismatch) and HydraConfig.get().mode == RunMode.MULTIRUN:
            raise JobRefused(str(err)) from None  # this job only: the sweep goes on, its exit code reports it
        sys.exit(2)


class JobRefused(RuntimeError):
    """A sweep job refused with a one-line ConfigError (e.g. its directory holds another recipe)."""


def main() -> None:
    sys.argv[1:] = quote_path_values(sys.argv[1:])
    try:
        check_group_overrides(sys.argv[1:], CONF_DIR)
        check_overrides_compose(sys.argv[1:])
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    _hydra_main()


if __name__ == "__main__":
    main()
