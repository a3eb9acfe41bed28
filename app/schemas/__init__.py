"""Pydantic models at the API boundary (extra='forbid' on input)."""
