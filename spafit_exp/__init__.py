"""spafit_exp: config-driven experiments for parameter-efficient fine-tuning."""

from pathlib import Path

__version__ = "0.1.0"

REPO_ROOT = Path(__file__).resolve().parent.parent
CONF_DIR = REPO_ROOT / "conf"
DATA_DIR = REPO_ROOT / "data"
