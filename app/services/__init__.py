"""Service functions called by the thin routers."""
