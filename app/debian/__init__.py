"""Debian formats and tools. python-debian is used only inside this package; the rest
of the code base sees plain dataclasses and pydantic models."""
