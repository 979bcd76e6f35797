"""`python -m spafit_exp.tables` (`make tables`): the entry point of `spafit_exp.report.tables`."""

import sys

from spafit_exp.report.tables import main

if __name__ == "__main__":
    sys.exit(main())
