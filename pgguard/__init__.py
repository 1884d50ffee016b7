"""pgguard: a PostgreSQL wire-protocol gateway that governs what AI agents do with data."""

__version__ = "0.1.0"
