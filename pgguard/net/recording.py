"""The recorder tap of a session: turns what a session sees into audit records.

Placeholder interface; the implementation lands with the recording integration.
"""

from __future__ import annotations
