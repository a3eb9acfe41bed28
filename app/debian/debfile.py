"""Control fields of built .deb files (python-debian's DebFile)."""

from __future__ import annotations

from pathlib import Path

from debian.debfile import DebFile


def control_fields(deb: Path) -> dict[str, str]:
    """The DEBIAN/control paragraph as an ordered dict of strings."""
    deb_file = DebFile(str(deb))
    try:
        return {k: str(v) for k, v in deb_file.debcontrol().items()}
    finally:
        deb_file.close()
