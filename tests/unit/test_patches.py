"""quilt series parsing, patch path safety and GNU patch failure messages
(app/debian/patches.py). describe_failure is fed the output of the real `patch`."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from app.debian.patches import (
    SeriesEntry,
    SeriesError,
    describe_failure,
    looks_like_patch,
    parse_series,
    unsafe_paths,
)
from tests.conftest import require_tools

# --- parse_series -------------------------------------------------------------------


def test_series_skips_comments_and_blank_lines_and_keeps_order() -> None:
    text = "# header\n\n02-second.patch\n   \n01-first.patch  # trailing comment\n#old.patch\n"
    assert parse_series(text) == [SeriesEntry("02-second.patch"), SeriesEntry("01-first.patch")]


def test_series_reads_strip_level_option() -> None:
    assert parse_series("a.patch -p0\nb.patch -p2\nc.patch\n") == [
        SeriesEntry("a.patch", 0),
        SeriesEntry("b.patch", 2),
        SeriesEntry("c.patch", 1),
    ]


@pytest.mark.parametrize("option", ["-R", "-p", "-px", "--fuzz=3", "p1"])
def test_series_refuses_unsupported_option_naming_line_and_option(option: str) -> None:
    with pytest.raises(SeriesError) as exc:
        parse_series(f"ok.patch\nbad.patch {option}\n")
    assert "line 2" in str(exc.value)
    assert repr(option) in str(exc.value)


@pytest.mark.parametrize("name", ["sub/x.patch", "../x.patch", ".hidden.patch", "/etc/passwd"])
def test_series_refuses_names_outside_the_series_dir(name: str) -> None:
    with pytest.raises(SeriesError) as exc:
        parse_series(name + "\n")
    assert repr(name) in str(exc.value)


def test_empty_series_has_no_entries() -> None:
    assert parse_series("# nothing here\n\n") == []


# --- unsafe_paths / looks_like_patch ----------------------------------------------------

def _diff(old: str, new: str) -> str:
    return f"--- {old}\n+++ {new}\n@@ -1 +1 @@\n-a\n+b\n"


def test_normal_a_b_paths_are_safe() -> None:
    assert unsafe_paths(_diff("a/src/main.c", "b/src/main.c")) == []


def test_dotdot_after_strip_is_unsafe() -> None:
    assert unsafe_paths(_diff("a/../etc/passwd", "b/../etc/passwd")) == [
        "a/../etc/passwd",
        "b/../etc/passwd",
    ]


def test_dotdot_deeper_in_path_is_unsafe() -> None:
    assert unsafe_paths(_diff("a/src/../../x", "b/src/../../x")) != []


def test_absolute_path_with_p0_is_unsafe() -> None:
    assert unsafe_paths(_diff("/etc/passwd", "/etc/passwd"), strip=0) == ["/etc/passwd"]


def test_relative_path_with_p0_is_safe() -> None:
    assert unsafe_paths(_diff("src/main.c", "src/main.c"), strip=0) == []


def test_dev_null_for_new_and_deleted_files_is_allowed() -> None:
    assert unsafe_paths(_diff("/dev/null", "b/new.txt"), strip=0) == []
    assert unsafe_paths(_diff("a/old.txt", "/dev/null")) == []


def test_timestamp_after_tab_is_not_part_of_the_path() -> None:
    text = _diff("a/f.txt\t2024-01-01 00:00:00.000 +0000", "b/../f.txt\t2024-01-01 +0000")
    assert unsafe_paths(text) == ["b/../f.txt"]


def test_context_diff_header_is_checked() -> None:
    text = "*** a/../x\n--- b/x\n***************\n*** 1 ****\n! a\n--- 1 ----\n! b\n"
    assert unsafe_paths(text) == ["a/../x"]


def test_unified_diff_looks_like_a_patch() -> None:
    assert looks_like_patch("Description: fix\n\n" + _diff("a/x", "b/x"))


def test_context_diff_looks_like_a_patch() -> None:
    assert looks_like_patch("*** a/x\n--- b/x\n***************\n")


@pytest.mark.parametrize("text", ["", "just some text\n", "--- a/x\nno plus line\n",
                                  "--- a/x\n+++ b/x\n", "*** a/x\n--- b/x\n"])
def test_text_without_diff_headers_is_not_a_patch(text: str) -> None:
    assert not looks_like_patch(text)


# --- describe_failure with real GNU patch output ------------------------------------------

ORIGINAL = "".join(f"line {i}\n" for i in range(1, 21))


def _run_patch(tree: Path, patch: Path) -> str:
    require_tools("patch")
    proc = subprocess.run(
        ["patch", "-p1", "--batch", "--forward", "--fuzz=0", "--no-backup-if-mismatch",
         "--reject-file=-", "-i", str(patch), "--dry-run"],
        cwd=tree, capture_output=True, text=True, env={"LC_ALL": "C", "PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode != 0, proc.stdout
    return proc.stdout + proc.stderr


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    src.mkdir()
    (src / "config.c").write_text(ORIGINAL)
    return src


def test_patch_that_does_not_apply_names_file_and_hunk(tree: Path, tmp_path: Path) -> None:
    patch = tmp_path / "fix-locking.patch"
    patch.write_text(
        "--- a/config.c\n+++ b/config.c\n"
        "@@ -2,3 +2,3 @@\n line 2\n-line 3\n+LINE 3\n line 4\n"
        "@@ -15,3 +15,3 @@\n line 15\n-this line is not there\n+line 16 changed\n line 17\n"
    )
    message = describe_failure(patch.name, _run_patch(tree, patch))
    assert "fix-locking.patch" in message
    assert "config.c" in message
    assert "hunk #2" in message
    assert "hunk #1" not in message


def test_patch_for_missing_file_names_the_file(tree: Path, tmp_path: Path) -> None:
    patch = tmp_path / "add-dlm.patch"
    patch.write_text("--- a/dlm/missing.c\n+++ b/dlm/missing.c\n@@ -1 +1 @@\n-old\n+new\n")
    message = describe_failure(patch.name, _run_patch(tree, patch))
    assert "add-dlm.patch" in message
    assert "file dlm/missing.c:" in message  # as in the source tree: -p1 stripped "a/"
    assert "not found" in message


def test_already_applied_patch_says_so_and_names_the_file(tree: Path, tmp_path: Path) -> None:
    patch = tmp_path / "already.patch"
    patch.write_text("--- a/config.c\n+++ b/config.c\n@@ -1,3 +1,3 @@\n-line 1\n+LINE 1\n"
                     " line 2\n line 3\n")
    (tree / "config.c").write_text(ORIGINAL.replace("line 1\n", "LINE 1\n", 1))
    message = describe_failure(patch.name, _run_patch(tree, patch))
    assert "already.patch" in message
    assert "config.c" in message
    assert "already applied" in message


def test_failures_in_two_files_are_both_named(tree: Path, tmp_path: Path) -> None:
    (tree / "other.c").write_text(ORIGINAL)
    patch = tmp_path / "two.patch"
    patch.write_text(
        "--- a/config.c\n+++ b/config.c\n@@ -1,2 +1,2 @@\n-nope\n+x\n line 2\n"
        "--- a/other.c\n+++ b/other.c\n@@ -5,2 +5,2 @@\n-nope\n+x\n line 6\n"
    )
    message = describe_failure(patch.name, _run_patch(tree, patch))
    assert "config.c, hunk #1" in message
    assert "other.c, hunk #1" in message


def test_file_name_with_space_is_named_without_quotes(tree: Path, tmp_path: Path) -> None:
    (tree / "my file.c").write_text(ORIGINAL)
    patch = tmp_path / "space.patch"
    patch.write_text("--- a/my file.c\t2024-01-01\n+++ b/my file.c\t2024-01-01\n"
                     "@@ -1,2 +1,2 @@\n-nope\n+x\n line 2\n")
    message = describe_failure(patch.name, _run_patch(tree, patch))
    assert "file my file.c, hunk #1" in message


def test_unrecognised_output_falls_back_to_its_last_lines() -> None:
    message = describe_failure("x.patch", "a\nb\nc\nd\npatch: **** Only garbage was found\n")
    assert message.startswith("patch x.patch does not apply: ")
    assert "Only garbage was found" in message
    assert "a /" not in message


def test_patch_whose_context_differs_does_not_apply_with_fuzz(tree: Path, tmp_path: Path) -> None:
    """dpkg-source and quilt apply with fuzz 0; so must ClusterForge."""
    patch = tmp_path / "fuzzy.patch"
    patch.write_text("--- a/config.c\n+++ b/config.c\n@@ -4,3 +4,3 @@\n line 4\n-line 5\n"
                     "+LINE 5\n context that is not there\n")
    message = describe_failure(patch.name, _run_patch(tree, patch))
    assert "fuzzy.patch" in message
    assert "file config.c, hunk #1" in message
