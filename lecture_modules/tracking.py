"""Weights & Biases set-up: run offline automatically, never prompt, never stall, name and group runs by lecture.

The decision is a function of the environment (:func:`wandb_offline_reason`) so it is testable:

1. An explicit ``WANDB_MODE`` wins (``offline``/``dryrun``/``disabled``; ``online`` skips the fallback below).
2. Without credentials (``WANDB_API_KEY``, or a netrc entry for the server as ``wandb login`` writes it) the run is
   offline.
3. With credentials, one bounded probe asks the server named by ``WANDB_BASE_URL`` (its own scheme, host and port;
   ``https://api.wandb.ai`` by default) who the key belongs to, the query ``wandb.init`` itself starts with. No
   HTTP answer within ``timeout`` seconds (nothing listening, no route, or a server that accepts the connection and
   never answers), or a server error (HTTP 5xx), makes the run offline, with the reason in one warning line: a
   training run should not wait minutes for a tracker, and an offline run is uploaded later with ``wandb sync``.
4. A key the server refuses (HTTP 401/403, or no user behind it) is an error, not a fallback: the same key would
   refuse every later ``wandb sync``, so going offline would only postpone the failure and hide a mistake the user
   has to fix anyway. The error says how to run offline on purpose (``WANDB_MODE=offline`` or
   ``--trainer.logger false``). The key is checked even with ``WANDB_MODE=online``; only the fallback is skipped.
"""

from __future__ import annotations

import base64
import http.client
import json
import logging
import netrc
import os
import threading
import urllib.error
import urllib.request
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from urllib.parse import urlsplit

from datamodules.errors import UserInputError

__all__ = [
    "WANDB_LOGGER_PATHS",
    "ServerProblem",
    "configure_wandb_init_args",
    "report_offline",
    "wandb_offline_reason",
]

log = logging.getLogger(__name__)

WANDB_LOGGER_PATHS = (
    "lightning.pytorch.loggers.WandbLogger",
    "lightning.pytorch.loggers.wandb.WandbLogger",
    "pytorch_lightning.loggers.WandbLogger",
    "WandbLogger",
)
DEFAULT_BASE_URL = "https://api.wandb.ai"
PROBE_TIMEOUT = 3.0  # seconds: a W&B server answers its viewer query in well under one
OFFLINE_HOW = "to run offline set WANDB_MODE=offline, or turn W&B off with --trainer.logger false"


class ServerProblem(str):
    """An offline reason that is a failure of the server the user meant to log to (said as a warning), as opposed
    to a choice (``WANDB_MODE``) or a missing login (said as information)."""


def _base_url(env: Mapping[str, str]) -> str:
    return (env.get("WANDB_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")


def _wandb_host(env: Mapping[str, str]) -> str:
    return urlsplit(_base_url(env)).hostname or "api.wandb.ai"


def _api_key(env: Mapping[str, str]) -> tuple[str, str] | None:
    """``(key, where it came from)``: ``WANDB_API_KEY``, else the netrc entry for the server's ``host:port`` (what
    ``wandb login --host`` writes) or its host name."""
    if env.get("WANDB_API_KEY"):
        return env["WANDB_API_KEY"], "WANDB_API_KEY"
    netrc_path = Path(env.get("NETRC", Path(env.get("HOME", str(Path.home()))) / ".netrc"))
    try:
        entries = netrc.netrc(str(netrc_path))
    except (OSError, netrc.NetrcParseError):
        return None
    for machine in dict.fromkeys((urlsplit(_base_url(env)).netloc, _wandb_host(env))):
        found = entries.authenticators(machine)
        if found is not None and found[2]:
            return found[2], f"the netrc entry for {machine} in {netrc_path}"
    return None


def _checked_base_url(env: Mapping[str, str]) -> str:
    """``WANDB_BASE_URL`` (or the default) when it is an http(s) URL with a host and a valid port."""
    base_url = _base_url(env)
    parts = urlsplit(base_url)
    try:
        valid = parts.scheme in ("http", "https") and bool(parts.hostname) and (parts.port or 1) > 0
    except ValueError:  # a port that is not a number in 0..65535
        valid = False
    if not valid:
        raise UserInputError(
            f"WANDB_BASE_URL={env.get('WANDB_BASE_URL')!r} is not an http(s) URL of a W&B server",
            hint="for example WANDB_BASE_URL=http://localhost:8080, or unset it for https://api.wandb.ai",
        )
    return base_url


def _ask_viewer(url: str, key: str, timeout: float) -> tuple[int, bytes] | str:
    """POST the viewer query to ``url``: ``(HTTP status, body)``, or what went wrong (completes "the server ...")."""
    request = urllib.request.Request(
        url,
        data=json.dumps({"query": "query Viewer { viewer { id } }"}).encode(),
        headers={
            "Content-Type": "application/json",
            "Authorization": "Basic " + base64.b64encode(f"api:{key}".encode()).decode(),
            "User-Agent": "ml-lectures",
        },
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read(65536)
    except urllib.error.HTTPError as exc:
        return exc.code, b""
    except (OSError, http.client.HTTPException) as exc:
        cause = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        if isinstance(cause, TimeoutError):
            return f"did not answer within {timeout:g} s"
        return f"is unreachable ({cause or type(cause).__name__})"


def _probe(base_url: str, key: str, timeout: float) -> tuple[int, bytes] | str:
    """:func:`_ask_viewer` within ``timeout`` seconds in all (name lookup included): ``(status, body)`` or why not."""
    answer: list = []
    worker = threading.Thread(
        target=lambda: answer.append(_ask_viewer(f"{base_url}/graphql", key, timeout)), daemon=True
    )
    worker.start()
    worker.join(timeout + 0.5)
    return answer[0] if answer else f"did not answer within {timeout:g} s"


def _refused(status: int, body: bytes) -> bool:
    """Whether the server refused the key: HTTP 401/403, or a viewer query that found no user."""
    if status in (401, 403):
        return True
    if status != 200:
        return False
    try:
        data = json.loads(body).get("data")
    except (ValueError, AttributeError):
        return False
    return isinstance(data, dict) and "viewer" in data and data["viewer"] is None


def wandb_offline_reason(env: Mapping[str, str] | None = None, timeout: float = PROBE_TIMEOUT) -> str | None:
    """Why the W&B run must be offline, or None to run online (the rules are in the module docstring).

    A reason that is a failure of the server is a :class:`ServerProblem`.

    Raises:
        UserInputError: the server refused the API key (the message says how to run offline), or ``WANDB_BASE_URL``
            is not an http(s) URL.
    """
    env = os.environ if env is None else env
    mode = env.get("WANDB_MODE", "").lower()
    if mode in ("offline", "dryrun", "disabled"):
        return f"WANDB_MODE={mode}"
    credentials = _api_key(env)
    if credentials is None:
        return None if mode == "online" else "no W&B credentials (set WANDB_API_KEY or run 'wandb login')"
    key, source = credentials
    base_url = _checked_base_url(env)
    answer = _probe(base_url, key, timeout)
    if isinstance(answer, tuple) and _refused(*answer):
        raise UserInputError(
            f"the W&B server {base_url} refused the API key from {source} (HTTP {answer[0]}); {OFFLINE_HOW}",
            hint="check the key ('wandb login --relogin', or https://wandb.ai/authorize) and WANDB_BASE_URL",
        )
    if mode == "online":
        return None
    if isinstance(answer, str):
        return ServerProblem(f"the W&B server {base_url} {answer}")
    if answer[0] >= 500:
        return ServerProblem(f"the W&B server {base_url} answered HTTP {answer[0]}")
    return None


def report_offline(reason: str) -> None:
    """Say once (rank zero) why the run is offline: a warning for a :class:`ServerProblem`, else information."""
    from lightning.pytorch.utilities import rank_zero_info, rank_zero_only

    if isinstance(reason, ServerProblem):
        rank_zero_only(log.warning)("W&B runs offline: %s; upload the run later with 'wandb sync'.", reason)
    else:
        rank_zero_info(f"W&B runs offline: {reason}.")


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
