"""Debian package names, versions and uploaded file names (app/debian/names.py)."""

from __future__ import annotations

import pytest

from app.debian.names import (
    compare_versions,
    filename_problem,
    package_name_problem,
    version_problem,
)


@pytest.mark.parametrize("name", ["hello", "cf-hello", "libc6", "g++", "python3.11", "0ad"])
def test_valid_package_names_are_accepted(name: str) -> None:
    assert package_name_problem(name) is None


@pytest.mark.parametrize(
    "name",
    ["Hello", "HELLO", "-hello", "+hello", ".hello", "a", "", "hel_lo", "hel lo", "héllo"],
)
def test_invalid_package_names_are_refused_with_the_name_in_the_reason(name: str) -> None:
    problem = package_name_problem(name)
    assert problem is not None
    assert repr(name) in problem


def test_package_name_with_trailing_newline_is_refused() -> None:
    assert package_name_problem("hello\n") is not None


@pytest.mark.parametrize(
    "version",
    ["1.0", "1.0-1", "1:1.0-1", "2:0.1~rc1-3", "1.0-1~bpo12+1", "1.0-1+cf1", "1.2-3-4", "0"],
)
def test_valid_versions_are_accepted(version: str) -> None:
    assert version_problem(version) is None


@pytest.mark.parametrize(
    ("version", "reason"),
    [
        ("x:1.0", "epoch"),
        (":1.0", "epoch"),
        ("a1.0", "upstream"),
        ("1.0-", "revision"),
        ("1.0-1_2", "revision"),
        ("1.0_1", "upstream"),
        ("1.0 ", "upstream"),
        ("", "upstream"),
        ("1:-1", "upstream"),
    ],
)
def test_invalid_versions_are_refused_naming_the_bad_part(version: str, reason: str) -> None:
    problem = version_problem(version)
    assert problem is not None
    assert reason in problem


@pytest.mark.parametrize("version", ["1.0\n", "1.0-1\n"])
def test_version_with_trailing_newline_is_refused(version: str) -> None:
    assert version_problem(version) is not None


@pytest.mark.parametrize(
    "name", ["cf-hello_1.0.dsc", "cf-hello_1.0.tar.xz", "pkg_1:2.0-1_amd64.deb", "a~b+c"]
)
def test_plain_basenames_are_accepted(name: str) -> None:
    assert filename_problem(name) is None


@pytest.mark.parametrize(
    "name",
    ["a/b.dsc", "/etc/passwd", "..", ".", "a..b", "../x", "a\\b.dsc", "a\x00b", "", ".hidden",
     "x" * 256, "-rf", "sp ace.dsc"],
)
def test_unsafe_file_names_are_refused(name: str) -> None:
    assert filename_problem(name) is not None


def test_empty_file_name_reason_says_empty() -> None:
    assert filename_problem("") == "empty file name"


def test_file_name_of_255_characters_is_the_longest_accepted() -> None:
    assert filename_problem("x" * 255) is None
    assert filename_problem("x" * 256) is not None


def test_file_name_with_trailing_newline_is_refused() -> None:
    assert filename_problem("cf-hello_1.0.dsc\n") is not None


@pytest.mark.parametrize(
    ("lower", "higher"),
    [
        ("1.0~rc1", "1.0"),
        ("1.0", "1.0+b1"),
        ("1.0-1", "1.0-2"),
        ("1.0-9", "1.0-10"),
        ("9.9", "1:0.1"),
        ("1.0-1~bpo12+1", "1.0-1"),
        ("1.0~~", "1.0~"),
        ("1.0-1", "1.0-1+cf1"),
    ],
)
def test_compare_versions_follows_dpkg_ordering(lower: str, higher: str) -> None:
    assert compare_versions(lower, higher) < 0
    assert compare_versions(higher, lower) > 0


def test_compare_versions_treats_missing_epoch_as_zero() -> None:
    assert compare_versions("0:1.0-1", "1.0-1") == 0
