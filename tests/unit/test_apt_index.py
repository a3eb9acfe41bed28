"""The dists/ files, checked against what apt and python-debian read."""

from __future__ import annotations

import gzip
import lzma
from datetime import UTC, datetime

from debian.deb822 import Packages, Release

from app.debian.apt_index import (
    IndexFile,
    PoolFile,
    compressed_forms,
    pool_path,
    render_packages,
    render_release,
    source_name,
)


def test_pool_path_uses_debian_prefixes() -> None:
    assert pool_path("main", "watchdog", "w_1_all.deb") == "pool/main/w/watchdog/w_1_all.deb"
    assert pool_path("main", "libqb", "x.deb") == "pool/main/libq/libqb/x.deb"
    assert pool_path("contrib", "lib", "x.deb") == "pool/contrib/l/lib/x.deb"


def test_source_name_drops_the_version_in_parentheses() -> None:
    assert source_name({"Package": "cman", "Source": "redhat-cluster (3.0-1)"}) == \
        "redhat-cluster"
    assert source_name({"Package": "cman"}) == "cman"


def _pool_file(name: str, version: str, description: str) -> PoolFile:
    control = {"Package": name, "Version": version, "Architecture": "amd64",
               "Description": description, "SHA256": "not-from-control"}
    return PoolFile(control=control, filename=f"pool/main/c/{name}/{name}.deb", size=42,
                    md5="0" * 32, sha256="f" * 64)


def test_packages_index_parses_with_python_debian() -> None:
    data = render_packages([
        _pool_file("cf-b", "2.0", "second\n line one\n .\n line two"),
        _pool_file("cf-a", "1.0", "first\nnot indented in storage"),
    ])
    stanzas = list(Packages.iter_paragraphs(data.decode(), use_apt_pkg=False))
    assert [s["Package"] for s in stanzas] == ["cf-a", "cf-b"]  # sorted
    assert stanzas[0]["Description"] == "first\n not indented in storage"
    assert stanzas[1]["Description"] == "second\n line one\n .\n line two"
    assert stanzas[1]["Size"] == "42" and stanzas[1]["SHA256"] == "f" * 64
    assert stanzas[1]["Filename"] == "pool/main/c/cf-b/cf-b.deb"
    assert data.decode().startswith("Package: cf-a\n")


def test_compressed_forms_round_trip_and_are_reproducible() -> None:
    data = b"Package: x\n" * 1000
    forms = compressed_forms(data)
    assert gzip.decompress(forms[".gz"]) == data and lzma.decompress(forms[".xz"]) == data
    assert compressed_forms(data) == forms  # gzip without a timestamp


def test_release_lists_every_file_with_size_and_checksums() -> None:
    files = [IndexFile("main/binary-amd64/Packages", b"abc"),
             IndexFile("main/binary-amd64/Packages.gz", b"x" * 1234)]
    text = render_release(
        origin="ClusterForge", label="cluster", suite="bookworm", codename="bookworm",
        description="", architectures=["amd64", "arm64"], components=["main"],
        date=datetime(2026, 11, 25, 12, 0, tzinfo=UTC), valid_days=7, files=files).decode()
    release = Release(text)
    assert release["Date"] == "Wed, 25 Nov 2026 12:00:00 UTC"
    assert release["Valid-Until"] == "Wed, 02 Dec 2026 12:00:00 UTC"
    assert release["Architectures"] == "amd64 arm64"
    assert release["Acquire-By-Hash"] == "yes"
    sha = {f["name"]: f for f in release["SHA256"]}
    md5 = {f["name"]: f for f in release["MD5Sum"]}
    assert sha["main/binary-amd64/Packages"]["sha256"] == files[0].sha256
    assert md5["main/binary-amd64/Packages.gz"]["md5sum"] == files[1].md5
    assert sha["main/binary-amd64/Packages.gz"]["size"] == "1234"
