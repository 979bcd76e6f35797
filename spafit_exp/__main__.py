"""Entry point: `python -m spafit_exp [overrides]` or `spafit-exp [overrides]`."""

import sys

import hydra
from omegaconf import DictConfig

from spafit_exp import CONF_DIR
from spafit_exp.config import check_group_overrides, check_overrides_compose, quote_path_values
from spafit_exp.errors import ConfigError


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def _hydra_main(cfg: DictConfig) -> None:
    from spafit_exp.app import run  # torch & co. load only once the command line is known to be good

    try:
        run(cfg)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)


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
