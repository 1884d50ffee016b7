"""``python -m pgguard.audit [audit] COMMAND ...``: the audit commands without the gateway's CLI."""

import sys

from .cli import main

sys.exit(main())
