"""Validation of Debian package names, versions and uploaded file names (Debian Policy
5.6.1, 5.6.7 and 5.6.12), so bad input is refused at the API with a precise reason."""

from __future__ import annotations

import re

from debian.debian_support import Version

PACKAGE_PATTERN = r"^[a-z0-9][a-z0-9+.-]+$"
VERSION_PATTERN = r"^[0-9:][A-Za-z0-9.+~:-]*$"
ARCH_PATTERN = r"^[a-z0-9][a-z0-9-]*$"
MAX_NAME_LENGTH = 200
PACKAGE_RE = re.compile(PACKAGE_PATTERN)
_UPSTREAM_RE = re.compile(r"^[0-9][A-Za-z0-9.+~-]*$")
_UPSTREAM_NO_HYPHEN_RE = re.compile(r"^[0-9][A-Za-z0-9.+~]*$")
_REVISION_RE = re.compile(r"^[A-Za-z0-9.+~]+$")
SAFE_FILENAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+~:-]*$")


def package_name_problem(name: str) -> str | None:
    """None when `name` is a valid source or binary package name, else the reason."""
    if len(name) > MAX_NAME_LENGTH:
        return f"package name is longer than {MAX_NAME_LENGTH} characters"
    if not PACKAGE_RE.fullmatch(name):
        return (
            f"{name!r} is not a valid Debian package name: lower-case letters, digits and "
            "'+', '-', '.' only, at least two characters, starting with a letter or digit"
        )
    return None


def version_problem(version: str) -> str | None:
    """None when `version` is a valid Debian version ([epoch:]upstream[-revision])."""
    if len(version) > MAX_NAME_LENGTH:
        return f"version is longer than {MAX_NAME_LENGTH} characters"
    rest = version
    if ":" in rest:
        epoch, rest = rest.split(":", 1)
        if not epoch.isdigit():
            return f"{version!r}: the epoch must be a number"
    if "-" in rest:
        upstream, revision = rest.rsplit("-", 1)
        if not _REVISION_RE.fullmatch(revision):
            return f"{version!r}: invalid Debian revision {revision!r}"
        if not _UPSTREAM_RE.fullmatch(upstream):
            return f"{version!r}: invalid upstream version {upstream!r} (must start with a digit)"
    elif not _UPSTREAM_NO_HYPHEN_RE.fullmatch(rest):
        return f"{version!r}: invalid upstream version (must start with a digit; A-Za-z0-9.+~)"
    try:
        Version(version)
    except ValueError as exc:
        return f"{version!r}: {exc}"
    return None


def filename_problem(name: str) -> str | None:
    """Uploaded names are basenames only: no directories, no '..', no hidden files."""
    if not name:
        return "empty file name"
    if "/" in name or "\\" in name or "\x00" in name:
        return f"file name {name!r} must be a plain basename (no '/')"
    if name in (".", "..") or ".." in name:
        return f"file name {name!r} must not contain '..'"
    if not SAFE_FILENAME_RE.fullmatch(name) or len(name) > 255:
        return f"file name {name!r} has characters outside A-Za-z0-9._+~:-"
    return None


def compare_versions(a: str, b: str) -> int:
    """dpkg's ordering: negative, zero or positive like cmp()."""
    va, vb = Version(a), Version(b)
    return (va > vb) - (va < vb)
