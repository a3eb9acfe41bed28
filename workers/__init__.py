"""arq workers: one module per pipeline."""
