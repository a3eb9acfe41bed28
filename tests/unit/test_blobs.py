"""The content-addressed blob store (app/blobs.py)."""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import pytest

from app.blobs import CHUNK, BlobStore, sha256_file

CONTENT = b"Package: cf-hello\nVersion: 1.0\n" * 1000


class FailingReader(io.RawIOBase):
    """Gives one chunk, then fails like a dropped upload."""

    def __init__(self) -> None:
        self.calls = 0

    def read(self, size: int = -1) -> bytes:
        self.calls += 1
        if self.calls == 1:
            return b"x" * 1024
        raise ConnectionResetError("client went away")


@pytest.fixture
def store(tmp_path: Path) -> BlobStore:
    return BlobStore(tmp_path / "blobs")


def test_put_stream_returns_sha256_and_size_of_the_content(store: BlobStore) -> None:
    assert store.put_stream(io.BytesIO(CONTENT)) == (
        hashlib.sha256(CONTENT).hexdigest(), len(CONTENT)
    )


def test_blob_lands_at_sha256_prefix_path(store: BlobStore, tmp_path: Path) -> None:
    sha, _ = store.put_stream(io.BytesIO(CONTENT))
    path = tmp_path / "blobs" / "sha256" / sha[:2] / sha[2:]
    assert store.path(sha) == path
    assert path.read_bytes() == CONTENT
    assert store.exists(sha)


def test_content_larger_than_one_chunk_is_stored_whole(store: BlobStore) -> None:
    big = bytes(range(256)) * (CHUNK // 256 * 2 + 3)
    sha, size = store.put_stream(io.BytesIO(big))
    assert size == len(big)
    assert sha256_file(store.path(sha)) == hashlib.sha256(big).hexdigest()


def test_second_put_of_same_content_is_idempotent(store: BlobStore, tmp_path: Path) -> None:
    first = store.put_stream(io.BytesIO(CONTENT))
    before = store.path(first[0]).stat()
    os.utime(store.path(first[0]), (0, 0))
    assert store.put_stream(io.BytesIO(CONTENT)) == first
    after = store.path(first[0]).stat()
    assert after.st_ino == before.st_ino  # the stored file is kept, not rewritten...
    assert after.st_mtime > 0  # ...but made young again, so GC spares it
    assert [p for p in (tmp_path / "blobs" / "sha256").rglob("*") if p.is_file()] == [
        store.path(first[0])
    ]


def test_no_temp_file_is_left_after_puts(store: BlobStore, tmp_path: Path) -> None:
    store.put_stream(io.BytesIO(CONTENT))
    store.put_stream(io.BytesIO(CONTENT))
    store.put_stream(io.BytesIO(b""))
    assert list((tmp_path / "blobs" / "tmp").iterdir()) == []


def test_stream_failing_midway_leaves_no_temp_file_and_no_blob(
    store: BlobStore, tmp_path: Path
) -> None:
    reader = FailingReader()
    with pytest.raises(ConnectionResetError):
        store.put_stream(reader)
    assert reader.calls == 2
    assert list((tmp_path / "blobs" / "tmp").iterdir()) == []
    assert [p for p in (tmp_path / "blobs" / "sha256").rglob("*") if p.is_file()] == []


def test_put_file_and_copy_to_round_trip(store: BlobStore, tmp_path: Path) -> None:
    src = tmp_path / "cf-hello_1.0.dsc"
    src.write_bytes(CONTENT)
    sha, size = store.put_file(src)
    dest = tmp_path / "out.dsc"
    store.copy_to(sha, dest)
    assert (sha, size) == (sha256_file(src), len(CONTENT))
    assert dest.read_bytes() == CONTENT
    assert b"".join(store.iter_chunks(sha)) == CONTENT


@pytest.mark.parametrize(
    "digest",
    ["", "abc", "g" * 64, "A" * 64, "../" + "a" * 61, "a" * 63, "a" * 65, "a" * 63 + "/"],
)
def test_path_rejects_anything_but_lowercase_sha256_hex(store: BlobStore, digest: str) -> None:
    with pytest.raises(ValueError, match="not a sha256 hex digest"):
        store.path(digest)
