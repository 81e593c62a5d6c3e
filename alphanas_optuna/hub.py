"""Is the Hugging Face Hub reachable? Asked once, in a few seconds, before a library retries.

``datasets`` and ``transformers`` retry an unreachable Hub five times with back-off, printing a
line per attempt, for about half a minute before they fail. A study that names a Hub id on a
machine without network should instead stop at once with one line that says how to use local
files, so :func:`hub_reachable` opens one TCP connection to the Hub first. It does not probe where
the answer would not be meaningful: in offline mode (``HF_HUB_OFFLINE``/``HF_DATASETS_OFFLINE``,
where the libraries use their cache without the network) or behind a proxy (where a direct
connection says nothing). Standard library only.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from collections.abc import Iterator
from urllib.parse import urlsplit

__all__ = ["hub_reachable", "offline_mode", "quiet_hub_retries"]

_PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")
_TRUE = ("1", "ON", "YES", "TRUE")


def offline_mode() -> bool:
    """Whether the Hugging Face libraries were told not to use the network."""
    return any(
        os.environ.get(name, "").upper() in _TRUE
        for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


def hub_reachable(timeout: float = 3.0) -> bool | None:
    """``True``/``False``: whether a TCP connection to the Hub (``HF_ENDPOINT``, default
    huggingface.co) opens within ``timeout`` seconds; ``None`` when that cannot tell (offline
    mode, or a proxy is configured)."""
    if offline_mode() or any(os.environ.get(name) for name in _PROXY_VARIABLES):
        return None
    endpoint = urlsplit(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    host = endpoint.hostname or "huggingface.co"
    port = endpoint.port or (80 if endpoint.scheme == "http" else 443)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


@contextlib.contextmanager
def quiet_hub_retries() -> Iterator[None]:
    """Hide huggingface_hub's "Retrying in 1s [Retry 1/5]" warnings for the block: the error
    that follows says it in one line."""
    hub_logger = logging.getLogger("huggingface_hub")
    level = hub_logger.level
    hub_logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        hub_logger.setLevel(level)
