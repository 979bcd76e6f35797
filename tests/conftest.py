import os
import subprocess
import sys
from pathlib import Path

import pytest

from spafit_exp.run.config import compose  # noqa: F401 - re-exported for the tests

os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory):
    """Tokenized-data cache in a per-session temp dir: tests never read a stale cache of the user's."""
    os.environ["SPAFIT_CACHE"] = str(tmp_path_factory.mktemp("cache"))


def run_cli(args: list[str], cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    """The real command line, as a user types it."""
    return subprocess.run([sys.executable, "-m", "spafit_exp", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "HYDRA_FULL_ERROR": "0"})


# Small enough for seconds on 2 cores, real enough to exercise the whole pipeline.
TINY_RUN = ["model=tiny_bert", "trainer.max_train_samples=32", "trainer.max_eval_samples=32", "trainer.epochs=1",
            "trainer.batch_size=8", "trainer.max_len=64", "trainer.lr=1e-3"]
