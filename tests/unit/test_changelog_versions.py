"""The ClusterForge changelog entry and local version suffixes (app/debian/changelog.py,
app/debian/local_version.py), checked against dpkg-parsechangelog."""

from __future__ import annotations

import gzip
import subprocess
from pathlib import Path

import pytest

from app.debian.changelog import add_entry, read_top
from app.debian.local_version import local_version, strip_local
from app.debian.names import compare_versions
from tests.conftest import require, require_tools

CHANGELOG = """\
pacemaker (2.1.5-1) bookworm; urgency=medium

  * New upstream release.
  * Depend on libqb with the fixed IPC.

 -- Jane Maintainer <jane@example.invalid>  Mon, 02 Jan 2023 10:00:00 +0100

pacemaker (2.1.4-2) unstable; urgency=low

  * Older entry.

 -- Jane Maintainer <jane@example.invalid>  Sun, 01 Jan 2023 10:00:00 +0100
"""
MAINTAINER = "ClusterForge <clusterforge@example.invalid>"


def _parsechangelog(path: Path, field: str) -> str:
    require_tools("dpkg-parsechangelog")
    proc = subprocess.run(["dpkg-parsechangelog", "-l", str(path), "-S", field],
                          capture_output=True, text=True, check=True)
    return proc.stdout.strip()


@pytest.fixture
def changelog(tmp_path: Path) -> Path:
    path = tmp_path / "changelog"
    path.write_text(CHANGELOG)
    return path


def test_read_top_returns_newest_entry(changelog: Path) -> None:
    assert read_top(changelog) == ("pacemaker", "2.1.5-1", "bookworm")


def test_add_entry_prepends_entry_with_version_package_and_distribution(
    changelog: Path,
) -> None:
    add_entry(changelog, "2.1.5-1+cf1", ["Rebuilt with series dlm-fix."], MAINTAINER)
    assert read_top(changelog) == ("pacemaker", "2.1.5-1+cf1", "bookworm")
    text = changelog.read_text()
    assert text.startswith("pacemaker (2.1.5-1+cf1) bookworm; urgency=medium\n")
    assert text.endswith(CHANGELOG)


def test_add_entry_is_understood_by_dpkg_parsechangelog(changelog: Path) -> None:
    changes = ["Rebuilt with series dlm-fix.", "Adds the missing dlm-dev package."]
    add_entry(changelog, "2.1.5-1+cf1", changes, MAINTAINER)
    assert _parsechangelog(changelog, "Version") == "2.1.5-1+cf1"
    assert _parsechangelog(changelog, "Source") == "pacemaker"
    assert _parsechangelog(changelog, "Distribution") == "bookworm"
    assert _parsechangelog(changelog, "Maintainer") == MAINTAINER
    parsed_changes = _parsechangelog(changelog, "Changes")
    for line in changes:
        assert f"  * {line}" in parsed_changes
    assert "New upstream release." not in parsed_changes


def test_add_entry_twice_stacks_entries(changelog: Path) -> None:
    add_entry(changelog, "2.1.5-1+cf1", ["first"], MAINTAINER)
    add_entry(changelog, "2.1.5-1+cf2", ["second"], MAINTAINER)
    assert _parsechangelog(changelog, "Version") == "2.1.5-1+cf2"
    text = changelog.read_text()
    assert text.index("(2.1.5-1+cf2)") < text.index("(2.1.5-1+cf1)") < text.index("(2.1.5-1)")


def test_add_entry_on_changelog_of_an_installed_package(tmp_path: Path) -> None:
    found = sorted(Path("/usr/share/doc").glob("*/changelog.Debian.gz"))
    require(bool(found), "an installed package's /usr/share/doc/*/changelog.Debian.gz")
    path = tmp_path / "changelog"
    path.write_bytes(gzip.decompress(found[0].read_bytes()))
    package, version, distribution = read_top(path)
    new = local_version(version, "cf", 1)
    add_entry(path, new, ["Local rebuild."], MAINTAINER)
    assert _parsechangelog(path, "Version") == new
    assert _parsechangelog(path, "Source") == package
    assert _parsechangelog(path, "Distribution") == distribution


def test_local_version_appends_suffix_and_number() -> None:
    assert local_version("1.0-1", "cf", 2) == "1.0-1+cf2"


@pytest.mark.parametrize("version", ["1.0-1+cf1", "1.0-1+cf12", "1.0-1"])
def test_strip_local_recovers_the_archive_version(version: str) -> None:
    assert strip_local(version, "cf") == "1.0-1"
    assert strip_local(strip_local(version, "cf"), "cf") == "1.0-1"


def test_strip_local_leaves_other_suffixes_alone() -> None:
    assert strip_local("1.0-1+b1", "cf") == "1.0-1+b1"
    assert strip_local("1.0-1+cf1~bpo", "cf") == "1.0-1+cf1~bpo"


def test_local_versions_sort_above_archive_and_below_next_revision() -> None:
    assert compare_versions("1.0-1+cf2", "1.0-1+cf1") > 0
    assert compare_versions("1.0-1+cf1", "1.0-1") > 0
    assert compare_versions("1.0-1+cf2", "1.0-2") < 0
    assert compare_versions(local_version("1.0-1", "cf", 10), "1.0-1+cf9") > 0
