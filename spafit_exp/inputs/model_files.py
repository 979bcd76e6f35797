"""A local model folder (`model.path`), checked before a run claims its run directory, so a folder that cannot load
is one line naming the file (ConfigError: exit 2, nothing written) instead of a traceback after the run started.
The checks are cheap — config.json read, safetensors headers opened (safetensors checks that the file covers every
tensor they list), a pytorch_model.bin's pickle scanned for anything but tensors — and load no weights.

Custom model code: a config.json with an `auto_map` asks transformers to import Python files from the folder.
Every load pins `trust_remote_code` to `model.trust_remote_code` (false unless set), so no folder's code runs
unless the user asked for it, and transformers never stops to ask on stdin."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

from spafit_exp.core.errors import ConfigError
from spafit_exp.core.spec import ModelSpec

# In the order transformers looks for them: the first present is the one it loads.
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")


def trusts_remote_code(model: ModelSpec) -> bool:
    """`model.trust_remote_code`; records written before the key existed (None) trusted none."""
    return bool(model.trust_remote_code or False)


def remote_code_error(folder, key: str = "model.path") -> ConfigError:
    return ConfigError(f"{key}={folder}: asks to run the folder's own Python code (auto_map in its config); set "
                       "model.trust_remote_code=true only if you trust that code")


def check_folder(folder: Path, trust_remote_code: bool) -> None:
    """ConfigError naming the file when `folder` is no model folder transformers can load without surprises."""
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    folder = Path(folder)
    if not folder.is_dir():
        raise ConfigError(f"model.path={folder}: not a directory")
    settings = _json(folder / "config.json", f"model.path={folder}: no config.json (not a saved model folder)")
    if "auto_map" in settings and not trust_remote_code and settings.get("model_type") not in CONFIG_MAPPING:
        raise remote_code_error(folder)  # transformers has no class of its own for it: only the folder's code loads it
    for path in _weight_files(folder):
        _check_weights(path)


def _json(path: Path, missing: str) -> dict:
    if not path.is_file():
        raise ConfigError(missing)
    try:
        value = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise ConfigError(f"{path}: unreadable ({type(err).__name__}: {str(err).splitlines()[0]})") from None
    if not isinstance(value, dict):
        raise ConfigError(f"{path}: unreadable (not a JSON object)")
    return value


def _weight_files(folder: Path) -> list[Path]:
    name = next((n for n in WEIGHT_FILES if (folder / n).is_file()), None)
    if name is None:
        raise ConfigError(f"model.path={folder}: no weights ({' or '.join(WEIGHT_FILES[::2])})")
    if not name.endswith(".index.json"):
        return [folder / name]
    shards = _json(folder / name, "").get("weight_map")
    if not isinstance(shards, dict) or not shards:
        raise ConfigError(f"{folder / name}: unreadable (no weight_map)")
    files = [folder / shard for shard in sorted(set(map(str, shards.values())))]
    for path in files:
        if not path.is_file():
            raise ConfigError(f"{path}: missing (listed in {name})")
    return files


def _check_weights(path: Path) -> None:
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt"):
                return
        except Exception as err:  # noqa: BLE001 - SafetensorError and the like: the header does not cover the file
            raise ConfigError(f"{path}: unreadable weights ({str(err).splitlines()[0]}); cut short? copy it again") \
                from None
    with open(path, "rb") as handle:
        zipped = handle.read(2) == b"PK"
    if not zipfile.is_zipfile(path):
        if zipped:  # a zip's directory is at its end: gone when the file is cut short
            raise ConfigError(f"{path}: unreadable weights (a torch zip file without its end); cut short? copy it again")
        return  # torch's legacy format: its loader (weights_only) decides
    from torch.serialization import get_unsafe_globals_in_checkpoint

    try:
        unsafe = get_unsafe_globals_in_checkpoint(str(path))
    except Exception as err:  # noqa: BLE001 - a damaged pickle
        raise ConfigError(f"{path}: unreadable weights ({type(err).__name__}: {str(err).splitlines()[0]})") from None
    if unsafe:
        raise ConfigError(f"{path}: holds pickled Python objects, not only tensors ({', '.join(unsafe[:3])}); loading "
                          "it could run code, so it is refused: save the weights as model.safetensors")
