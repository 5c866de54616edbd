"""Waits between retries."""

from __future__ import annotations

import random


def jitter(seconds: float) -> float:
    """Between half and all of ``seconds``: agents on every node do not retry in step."""
    return seconds * random.uniform(0.5, 1.0)
