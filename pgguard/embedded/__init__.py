"""Throwaway servers started from local binaries: PostgreSQL and OpenBao.

Used by ``pgguard demo`` and by the test harness. The submodules are imported on demand:
:mod:`pgguard.embedded.openbao` needs ``hvac`` (the ``demo`` or ``vault`` extra), while
:mod:`pgguard.embedded.postgres` needs only the standard library.
"""
