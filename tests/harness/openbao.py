"""The throwaway OpenBao server for tests: :mod:`pgguard.embedded.openbao`."""

from __future__ import annotations

from pgguard.embedded.openbao import *  # noqa: F403
from pgguard.embedded.openbao import BaoServer  # noqa: F401  (named for readers and linters)
