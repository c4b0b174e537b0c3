"""The NATS server the backbone's tests use: the real one on this machine (CI starts it)."""

from __future__ import annotations

import os

NATS_URL = os.environ.get("SYNCLINE_TEST_NATS", "nats://127.0.0.1:4222")
