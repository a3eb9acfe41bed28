"""Local version suffixes: 1.2-3 -> 1.2-3+cf1. Appending '+cfN' makes the rebuilt
package sort above the archive's 1.2-3 (and below the archive's next revision), which
is what apt needs to prefer it."""

from __future__ import annotations

import re


def local_version(base: str, suffix: str, number: int) -> str:
    return f"{base}+{suffix}{number}"


def strip_local(version: str, suffix: str) -> str:
    """The archive version a local version was made from (idempotent)."""
    return re.sub(rf"\+{re.escape(suffix)}\d+$", "", version)
