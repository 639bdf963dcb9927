"""Weights & Biases set-up: run offline automatically, never prompt, name and group runs by lecture.

The decision is a pure function of the environment (:func:`wandb_offline_reason`) so it is testable:
explicit ``WANDB_MODE`` wins; without credentials (``WANDB_API_KEY`` or a netrc entry for the W&B host) the run is
offline; with credentials but no route to the host within ``timeout`` seconds it is offline too.
"""

from __future__ import annotations

import netrc
import os
import socket
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from urllib.parse import urlparse

__all__ = ["WANDB_LOGGER_PATHS", "configure_wandb_init_args", "wandb_offline_reason"]

WANDB_LOGGER_PATHS = (
    "lightning.pytorch.loggers.WandbLogger",
    "lightning.pytorch.loggers.wandb.WandbLogger",
    "pytorch_lightning.loggers.WandbLogger",
    "WandbLogger",
)


def _wandb_host(env: Mapping[str, str]) -> str:
    return urlparse(env.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname or "api.wandb.ai"


def _has_credentials(env: Mapping[str, str]) -> bool:
    if env.get("WANDB_API_KEY"):
        return True
    netrc_path = Path(env.get("NETRC", Path(env.get("HOME", str(Path.home()))) / ".netrc"))
    try:
        return netrc.netrc(str(netrc_path)).authenticators(_wandb_host(env)) is not None
    except (FileNotFoundError, netrc.NetrcParseError, PermissionError):
        return False


def _reachable(host: str, timeout: float) -> bool:
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def wandb_offline_reason(env: Mapping[str, str] | None = None, timeout: float = 2.0) -> str | None:
    """Why the W&B run must be offline, or None to run online."""
    env = os.environ if env is None else env
    mode = env.get("WANDB_MODE", "").lower()
    if mode in ("offline", "dryrun", "disabled"):
        return f"WANDB_MODE={mode}"
    if mode == "online":
        return None
    if not _has_credentials(env):
        return "no W&B credentials (set WANDB_API_KEY or run 'wandb login')"
    if not _reachable(_wandb_host(env), timeout):
        return f"the W&B server {_wandb_host(env)} is unreachable"
    return None


def configure_wandb_init_args(init_args: dict, lecture: str, job_type: str, offline_reason: str | None) -> dict:
    """Fill in the defaults of a ``WandbLogger``'s init args: offline mode, run name, group and job type.

    Values the user set are kept; only unset ones are filled.
    """
    out = dict(init_args)
    if offline_reason is not None and not out.get("offline"):
        out["offline"] = True
        out["log_model"] = False  # models cannot be uploaded offline; WandbLogger rejects the combination
    defaults = {
        "project": "ml-lectures",
        "name": f"{lecture}-{datetime.now():%Y%m%d-%H%M%S}",
        "group": lecture,
        "job_type": job_type,
    }
    for key, value in defaults.items():
        if not out.get(key):  # unset or null in the config
            out[key] = value
    return out
