"""Content-addressed blob store: blobs/sha256/ab/cdef... Files are written to a
temporary name in the same filesystem and renamed, so a reader never sees half a blob
and a crash leaves only a temp file behind."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

CHUNK = 1024 * 1024


class BlobStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "sha256").mkdir(parents=True, exist_ok=True)
        (root / "tmp").mkdir(parents=True, exist_ok=True)

    def path(self, sha256: str) -> Path:
        if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
            raise ValueError(f"not a sha256 hex digest: {sha256!r}")
        return self.root / "sha256" / sha256[:2] / sha256[2:]

    def exists(self, sha256: str) -> bool:
        return self.path(sha256).is_file()

    def put_file(self, src: Path) -> tuple[str, int]:
        """Copy a file into the store (hashing while copying); returns (sha256, size)."""
        with src.open("rb") as fh:
            return self.put_stream(fh)

    def put_deb(self, src: Path) -> tuple[str, int, str]:
        """put_file plus the MD5 that apt's Packages index still lists, computed in the
        same pass, so publishing never has to reread a package."""
        md5 = hashlib.md5()
        with src.open("rb") as fh:
            sha, size = self.put_stream(fh, also=md5)
        return sha, size, md5.hexdigest()

    def put_stream(self, fh: BinaryIO, also: Any = None) -> tuple[str, int]:
        """Store the stream; returns (sha256, size). `also` is another hashlib object
        fed the same bytes."""
        digest = hashlib.sha256()
        size = 0
        fd, tmp = tempfile.mkstemp(dir=self.root / "tmp")
        try:
            with os.fdopen(fd, "wb") as out:
                for chunk in iter(lambda: fh.read(CHUNK), b""):
                    digest.update(chunk)
                    if also is not None:
                        also.update(chunk)
                    size += len(chunk)
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            sha = digest.hexdigest()
            dest = self.path(sha)
            dest.parent.mkdir(parents=True, exist_ok=True)
            try:
                # Already stored: make it young again (the garbage collector spares young
                # blobs, and this one is about to be referenced by a new row).
                os.utime(dest)
                os.unlink(tmp)
            except FileNotFoundError:  # not stored, or just collected: store it
                os.chmod(tmp, 0o644)
                os.replace(tmp, dest)
            return sha, size
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise

    def copy_to(self, sha256: str, dest: Path) -> None:
        """Materialise a blob as a regular file (the build tools want real files)."""
        shutil.copyfile(self.path(sha256), dest)

    def iter_chunks(self, sha256: str) -> Iterator[bytes]:
        with self.path(sha256).open("rb") as fh:
            yield from iter(lambda: fh.read(CHUNK), b"")


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()
