"""Name rules shared by the broker (which enforces them) and the client (which checks early)."""

from __future__ import annotations

import re

TOPIC_NAME_RE = re.compile(r"[A-Za-z0-9._-]{1,249}")


def is_valid_topic_name(name: str) -> bool:
    """1-249 characters of [A-Za-z0-9._-], and not '.' or '..'."""
    return bool(TOPIC_NAME_RE.fullmatch(name)) and name not in (".", "..")
