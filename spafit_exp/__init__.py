"""spafit_exp: config-driven experiments for parameter-efficient fine-tuning."""

import time
from pathlib import Path

# Taken before anything heavy is imported: the first run a process trains counts its imports as set-up
# (spafit_exp/core/timing.py).
PROCESS_STARTED = time.time()

__version__ = "0.1.0"

REPO_ROOT = Path(__file__).resolve().parent.parent
CONF_DIR = REPO_ROOT / "conf"
DATA_DIR = REPO_ROOT / "data"
