"""deb-src entries from the host's apt configuration and the private apt setup
(app/debian/apt_sources.py), on fake etc/apt trees. Only example.invalid hosts."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from app.debian.apt_sources import AptConfigError, PrivateApt, SourceEntry, source_entries

DEB822 = """\
Types: deb
URIs: http://example.invalid/debian
Suites: bookworm bookworm-updates
Components: main contrib non-free-firmware
Signed-By: /usr/share/keyrings/example-archive-keyring.gpg
"""


def _etc(tmp_path: Path, sources_list: str = "", parts: dict[str, str] | None = None) -> Path:
    etc = tmp_path / "etc" / "apt"
    (etc / "sources.list.d").mkdir(parents=True)
    (etc / "sources.list").write_text(sources_list)
    for name, text in (parts or {}).items():
        (etc / "sources.list.d" / name).write_text(text)
    return etc


def _snapshot(root: Path) -> dict[str, tuple[bytes, int]]:
    return {str(p.relative_to(root)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_deb822_deb_entry_gives_deb_src_with_same_uris_suites_components_key(
    tmp_path: Path,
) -> None:
    etc = _etc(tmp_path, parts={"debian.sources": DEB822})
    assert source_entries(etc) == [
        SourceEntry(
            uris=("http://example.invalid/debian",),
            suites=("bookworm", "bookworm-updates"),
            components=("main", "contrib", "non-free-firmware"),
            options=(("Signed-By", "/usr/share/keyrings/example-archive-keyring.gpg"),),
            is_src=True,
        )
    ]


def test_one_line_deb_entry_gives_deb_src_with_signed_by(tmp_path: Path) -> None:
    etc = _etc(tmp_path, "deb [signed-by=/x.gpg] http://example.invalid/debian bookworm main "
                         "contrib\n")
    assert source_entries(etc) == [
        SourceEntry(("http://example.invalid/debian",), ("bookworm",), ("main", "contrib"),
                    (("Signed-By", "/x.gpg"),), True)
    ]


def test_arch_option_is_not_carried_to_deb_src(tmp_path: Path) -> None:
    etc = _etc(tmp_path, "deb [arch=amd64 signed-by=/x.gpg] http://example.invalid/d sid main\n")
    [entry] = source_entries(etc)
    assert entry.options == (("Signed-By", "/x.gpg"),)


def test_existing_deb_src_entries_are_used_exactly(tmp_path: Path) -> None:
    etc = _etc(
        tmp_path,
        "deb http://example.invalid/debian bookworm main\n"
        "deb-src http://example.invalid/src-only trixie main non-free\n",
        {"debian.sources": DEB822,
         "extra.sources": "Types: deb-src\nURIs: http://example.invalid/other\n"
                          "Suites: sid\nComponents: main\n"},
    )
    assert source_entries(etc) == [
        SourceEntry(("http://example.invalid/src-only",), ("trixie",), ("main", "non-free"),
                    (), True),
        SourceEntry(("http://example.invalid/other",), ("sid",), ("main",), (), True),
    ]


def test_disabled_paragraphs_and_comments_are_ignored(tmp_path: Path) -> None:
    sources = (
        "# The main archive\n" + DEB822 + "\n"
        "# Types: deb-src\n# URIs: http://example.invalid/commented\n# Suites: bookworm\n\n"
        "Enabled: no\nTypes: deb-src\nURIs: http://example.invalid/disabled\n"
        "Suites: bookworm\nComponents: main\n"
    )
    etc = _etc(
        tmp_path,
        "# deb-src http://example.invalid/commented bookworm main\n"
        "deb http://example.invalid/one-line bookworm main  # trailing comment\n",
        {"debian.sources": sources},
    )
    entries = source_entries(etc)
    uris = [u for e in entries for u in e.uris]
    assert uris == ["http://example.invalid/one-line", "http://example.invalid/debian"]
    assert all(e.is_src for e in entries)
    assert entries[0].components == ("main",)


def test_duplicate_deb_entries_give_one_deb_src(tmp_path: Path) -> None:
    line = "deb http://example.invalid/debian bookworm main\n"
    etc = _etc(tmp_path, line, {"dup.list": line})
    assert len(source_entries(etc)) == 1


def test_files_without_list_or_sources_suffix_are_ignored(tmp_path: Path) -> None:
    etc = _etc(tmp_path, parts={"old.list.save": "deb http://example.invalid/x sid main\n",
                                "debian.sources": DEB822})
    assert [e.uris for e in source_entries(etc)] == [("http://example.invalid/debian",)]


def test_cdrom_line_does_not_become_a_bogus_source_entry(tmp_path: Path) -> None:
    etc = _etc(
        tmp_path,
        "deb cdrom:[Debian GNU/Linux 12.5.0 _Bookworm_ - Official amd64 DVD Binary-1 "
        "20240210-11:28]/ bookworm contrib main\n"
        "deb http://example.invalid/debian bookworm main\n",
    )
    entries = source_entries(etc)
    assert [e.uris for e in entries if not e.uris[0].startswith("cdrom:")] == [
        ("http://example.invalid/debian",)
    ]
    assert all(e.suites == ("bookworm",) for e in entries)


def test_private_apt_config_points_inside_its_root_and_leaves_etc_alone(
    tmp_path: Path,
) -> None:
    etc = _etc(tmp_path, "deb [signed-by=/x.gpg] http://example.invalid/debian bookworm main\n",
               {"debian.sources": DEB822})
    before = _snapshot(tmp_path / "etc")
    root = tmp_path / "data" / "apt"
    apt = PrivateApt(root, etc_apt=etc)

    assert apt.write_config() is True
    conf = (root / "apt.conf").read_text()
    lists = re.search(r'^Dir::State::Lists "([^"]+)";$', conf, re.MULTILINE)
    assert lists is not None
    assert Path(lists.group(1)).is_relative_to(root)
    for value in re.findall(r'^Dir::Etc::Source\w+ "([^"]+)";$', conf, re.MULTILINE):
        assert Path(value).is_relative_to(root)
    assert apt.env["APT_CONFIG"] == str(root / "apt.conf")
    written = apt.sources.read_text()
    assert written.count("Types: deb-src\n") == 2
    assert "Signed-By: /x.gpg" in written

    assert apt.write_config() is False
    assert _snapshot(tmp_path / "etc") == before


def test_private_apt_reports_change_when_host_sources_change(tmp_path: Path) -> None:
    etc = _etc(tmp_path, parts={"debian.sources": DEB822})
    apt = PrivateApt(tmp_path / "apt", etc_apt=etc)
    assert apt.write_config() is True
    (etc / "sources.list").write_text("deb http://example.invalid/new sid main\n")
    assert apt.write_config() is True
    assert "http://example.invalid/new" in apt.sources.read_text()


def test_private_apt_without_any_host_source_fails_clearly(tmp_path: Path) -> None:
    etc = _etc(tmp_path, "# nothing configured\n")
    with pytest.raises(AptConfigError, match="no deb or deb-src entries"):
        PrivateApt(tmp_path / "apt", etc_apt=etc).write_config()


def test_embedded_signed_by_key_block_is_kept_in_the_derived_entry(tmp_path):
    etc = tmp_path / "etc-apt"
    (etc / "sources.list.d").mkdir(parents=True)
    key = (" -----BEGIN PGP PUBLIC KEY BLOCK-----\n .\n mQINBGRzZXJ2ZXIta2V5\n"
           " -----END PGP PUBLIC KEY BLOCK-----")
    (etc / "sources.list.d" / "inline.sources").write_text(
        "Types: deb\nURIs: http://example.invalid/debian\nSuites: bookworm\n"
        f"Components: main\nSigned-By:\n{key}\n")
    [entry] = source_entries(etc)
    text = entry.to_deb822()
    assert "Signed-By:\n -----BEGIN PGP PUBLIC KEY BLOCK-----\n .\n" in text
    from debian.deb822 import Deb822

    reparsed = next(Deb822.iter_paragraphs(text.splitlines()))
    assert "mQINBGRzZXJ2ZXIta2V5" in reparsed["Signed-By"]


def test_paragraphs_disabled_with_false_or_off_are_ignored(tmp_path):
    etc = tmp_path / "etc-apt"
    (etc / "sources.list.d").mkdir(parents=True)
    (etc / "sources.list.d" / "off.sources").write_text(
        "Types: deb\nURIs: http://example.invalid/a\nSuites: bookworm\nEnabled: false\n\n"
        "Types: deb\nURIs: http://example.invalid/b\nSuites: bookworm\nEnabled: off\n\n"
        "Types: deb\nURIs: http://example.invalid/c\nSuites: bookworm\n")
    assert [e.uris for e in source_entries(etc)] == [("http://example.invalid/c",)]
