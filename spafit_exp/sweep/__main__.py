"""`python -m spafit_exp.sweep plan|status …`: the entry point of `spafit_exp.sweep.cli`."""

import sys

from spafit_exp.sweep.cli import main

sys.exit(main())
