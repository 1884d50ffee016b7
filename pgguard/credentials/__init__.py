"""Database credentials for a session: where the gateway's upstream login comes from.

* :mod:`.lease` — the :class:`Lease` a session holds and the :class:`CredentialSource` it asks;
* :mod:`.static` — static credentials from the configuration (development only);
* :mod:`.vault` — just-in-time leases from Vault/OpenBao (the only module importing hvac,
  so it is not imported here: import ``pgguard.credentials.vault`` to use it directly);
* :mod:`.router` — :class:`Credentials`, which picks the source a grant names;
* :mod:`.build` — :func:`build_credentials`, which builds the sources from the config.
"""

from .build import build_credentials
from .lease import CredentialSource, Lease
from .router import Credentials
from .static import StaticCredentials

__all__ = ["CredentialSource", "Credentials", "Lease", "StaticCredentials",
           "build_credentials"]
