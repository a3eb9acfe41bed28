"""A job's log file: <data>/logs/<kind>/<id>.log. Commands write straight into it (their
stdout is the file), so a client tailing the log sees output as it is produced."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path


def log_path(data_dir: Path, kind: str, job_id: int) -> Path:
    return data_dir / "logs" / kind / f"{job_id}.log"


class JobLog:
    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(exist_ok=True)

    def write(self, text: str) -> None:
        """Append a line (small, O_APPEND: safe beside a running command's output)."""
        stamp = datetime.now(UTC).strftime("%H:%M:%S")
        with self.path.open("a", encoding="utf-8") as fh:
            fh.write(f"[{stamp}] {text}\n")

    def size(self) -> int:
        return self.path.stat().st_size

    def read_from(self, offset: int, limit: int = 64 * 1024) -> str:
        """Text appended since `offset` (at most `limit` bytes, the last ones)."""
        end = self.size()
        start = max(offset, end - limit)
        with self.path.open("rb") as fh:
            fh.seek(start)
            return fh.read(end - start).decode("utf-8", errors="replace")

    def open_for_command(self) -> int:
        """A raw append-mode fd to hand to a child process as stdout and stderr."""
        return os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)


def read_chunk(path: Path, offset: int, max_bytes: int) -> tuple[bytes, int]:
    """Bytes of a log from `offset`, at most `max_bytes`; returns (data, next_offset)."""
    if not path.exists():
        return b"", offset
    size = path.stat().st_size
    if offset >= size:
        return b"", size
    with path.open("rb") as fh:
        fh.seek(offset)
        data = fh.read(min(max_bytes, size - offset))
    return data, offset + len(data)
