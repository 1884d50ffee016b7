"""pytest fixtures for the OpenBao dev server (identity tokens, database secrets)."""
