""".dsc parsing and file verification (app/debian/dsc.py), on source packages built by
dpkg-source from tests/debfixtures.py."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from app.debian.dsc import DscError, DscInfo, parse_dsc, verify_files
from tests.conftest import require_tools
from tests.debfixtures import dsc_files, make_native_source


@pytest.fixture
def source_dir(tmp_path: Path) -> Path:
    """A directory holding exactly a fresh .dsc and the files it lists."""
    require_tools("dpkg-source")
    dsc = make_native_source(tmp_path / "build", "cf-hello", "1.2")
    out = tmp_path / "src"
    out.mkdir()
    for f in dsc_files(dsc):
        shutil.copy(f, out / f.name)
    return out


def _dsc(directory: Path) -> Path:
    return directory / "cf-hello_1.2.dsc"


def _info(directory: Path) -> DscInfo:
    return parse_dsc(_dsc(directory).read_bytes())


def test_dsc_from_dpkg_source_is_parsed(source_dir: Path) -> None:
    info = _info(source_dir)
    assert (info.source, info.version, info.format) == ("cf-hello", "1.2", "3.0 (native)")
    assert info.binaries == ["cf-hello"]
    assert [f.name for f in info.files] == ["cf-hello_1.2.tar.xz"]
    tarball = info.files[0]
    assert tarball.size == (source_dir / tarball.name).stat().st_size
    assert set(tarball.checksums) == {"sha256", "sha1", "md5sum"}


def test_pgp_signed_dsc_is_parsed_like_the_plain_one(source_dir: Path) -> None:
    body = _dsc(source_dir).read_text()
    signed = (
        "-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA256\n\n" + body
        + "-----BEGIN PGP SIGNATURE-----\n\niQEzBAEBCAAdFiEEexample\n=AbCd\n"
        "-----END PGP SIGNATURE-----\n"
    )
    assert parse_dsc(signed.encode()) == _info(source_dir)


def test_verify_accepts_untouched_source(source_dir: Path) -> None:
    assert verify_files(_info(source_dir), source_dir, dsc_name=_dsc(source_dir).name) == []


@pytest.mark.parametrize(
    "data", [b"garbage", b"", b"\n\n\n", b"Source cf-hello\nVersion 1.0\n"]
)
def test_garbage_is_refused_listing_every_missing_field(data: bytes) -> None:
    with pytest.raises(DscError) as exc:
        parse_dsc(data)
    problems = exc.value.problems
    assert ".dsc has no Source field" in problems
    assert ".dsc has no Version field" in problems
    assert any("lists no files" in p for p in problems)


def test_non_utf8_dsc_is_refused() -> None:
    with pytest.raises(DscError, match="UTF-8"):
        parse_dsc(b"Source: \xff\xfe\n")


def _replace_field(body: str, field: str, value: str) -> bytes:
    lines = [f"{field}: {value}" if ln.startswith(f"{field}:") else ln
             for ln in body.splitlines()]
    return ("\n".join(lines) + "\n").encode()


def test_bad_version_is_refused_naming_the_field(source_dir: Path) -> None:
    data = _replace_field(_dsc(source_dir).read_text(), "Version", "x1.0")
    with pytest.raises(DscError) as exc:
        parse_dsc(data)
    assert [p for p in exc.value.problems if p.startswith("Version:") and "'x1.0'" in p]


def test_bad_source_name_is_refused_naming_the_field(source_dir: Path) -> None:
    data = _replace_field(_dsc(source_dir).read_text(), "Source", "CF_Hello")
    with pytest.raises(DscError) as exc:
        parse_dsc(data)
    assert [p for p in exc.value.problems if p.startswith("Source:") and "'CF_Hello'" in p]


def test_every_problem_is_listed_at_once(source_dir: Path) -> None:
    body = _dsc(source_dir).read_text()
    body = _replace_field(body, "Version", "x1.0").decode()
    data = _replace_field(body, "Source", "CF_Hello")
    with pytest.raises(DscError) as exc:
        parse_dsc(data)
    assert len(exc.value.problems) == 2


def test_file_name_with_slash_is_refused(source_dir: Path) -> None:
    body = _dsc(source_dir).read_text().replace(" cf-hello_1.2.tar.xz", " ../etc/passwd")
    with pytest.raises(DscError) as exc:
        parse_dsc(body.encode())
    assert any("'../etc/passwd'" in p for p in exc.value.problems)


def test_sizes_that_disagree_between_fields_are_refused() -> None:
    data = (
        "Format: 3.0 (native)\nSource: cf-hello\nVersion: 1.0\n"
        "Checksums-Sha256:\n " + "0" * 64 + " 10 cf-hello_1.0.tar.xz\n"
        "Files:\n " + "0" * 32 + " 11 cf-hello_1.0.tar.xz\n"
    ).encode()
    with pytest.raises(DscError, match="sizes disagree"):
        parse_dsc(data)


def test_tampered_file_is_reported_with_checksum_and_name(source_dir: Path) -> None:
    info = _info(source_dir)
    tarball = source_dir / info.files[0].name
    data = bytearray(tarball.read_bytes())
    data[-1] ^= 0xFF  # same size, different content
    tarball.write_bytes(bytes(data))
    problems = verify_files(info, source_dir, dsc_name=_dsc(source_dir).name)
    assert problems
    assert all(p.startswith("cf-hello_1.2.tar.xz: ") for p in problems)
    assert {p.split()[1] for p in problems} == {"SHA-256", "SHA-1", "MD5"}


def test_missing_file_is_reported(source_dir: Path) -> None:
    info = _info(source_dir)
    (source_dir / "cf-hello_1.2.tar.xz").unlink()
    assert verify_files(info, source_dir, dsc_name=_dsc(source_dir).name) == [
        "cf-hello_1.2.tar.xz: listed in the .dsc but missing"
    ]


def test_extra_unlisted_file_is_reported(source_dir: Path) -> None:
    (source_dir / "evil.sh").write_text("#!/bin/sh\n")
    problems = verify_files(_info(source_dir), source_dir, dsc_name=_dsc(source_dir).name)
    assert problems == ["evil.sh: not listed in the .dsc"]


def test_dsc_itself_counts_as_unlisted_when_its_name_is_not_given(source_dir: Path) -> None:
    problems = verify_files(_info(source_dir), source_dir)
    assert problems == ["cf-hello_1.2.dsc: not listed in the .dsc"]


def test_size_mismatch_is_reported_with_both_sizes(source_dir: Path) -> None:
    info = _info(source_dir)
    tarball = source_dir / "cf-hello_1.2.tar.xz"
    expected = tarball.stat().st_size
    with tarball.open("ab") as fh:
        fh.write(b"x")
    problems = verify_files(info, source_dir, dsc_name=_dsc(source_dir).name)
    assert problems == [
        f"cf-hello_1.2.tar.xz: size {expected + 1} does not match the .dsc ({expected})"
    ]
