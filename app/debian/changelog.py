"""Adding the ClusterForge entry to debian/changelog with python-debian, so the binary
packages carry the local version and their changelog says which series made them."""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import format_datetime
from pathlib import Path

from debian.changelog import Changelog


def read_top(changelog_path: Path) -> tuple[str, str, str]:
    """(package, version, distribution) of the newest entry."""
    with changelog_path.open(encoding="utf-8", errors="replace") as fh:
        cl = Changelog(fh, max_blocks=1)
    return cl.package, str(cl.version), cl.distributions


def add_entry(changelog_path: Path, version: str, changes: list[str], maintainer: str) -> None:
    """Prepend an entry for `version`, keeping the package name and distribution."""
    with changelog_path.open(encoding="utf-8", errors="replace") as fh:
        cl = Changelog(fh)
    cl.new_block(
        package=cl.package,
        version=version,
        distributions=cl.distributions,
        urgency="medium",
        author=maintainer,
        date=format_datetime(datetime.now(UTC)),  # RFC 2822 with +0000, as dch writes
        changes=["", *[f"  * {line}" for line in changes], ""],
    )
    changelog_path.write_text(str(cl), encoding="utf-8")
