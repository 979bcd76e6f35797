"""`python -m spafit_exp.lr_search`: the entry point of `spafit_exp.sweep.lr_search`."""

import sys

from spafit_exp.sweep.lr_search import main

if __name__ == "__main__":
    sys.exit(main())
