"""Settings that decide where an installation's data and queue are."""

from __future__ import annotations

from pathlib import Path

from app.settings import Settings


def test_each_data_directory_gets_its_own_queue_and_keeps_it(tmp_path: Path) -> None:
    one = Settings(data_dir=tmp_path / "one").resolved_queue_name
    assert one == Settings(data_dir=tmp_path / "one").resolved_queue_name
    assert one != Settings(data_dir=tmp_path / "two").resolved_queue_name
    assert (tmp_path / "one" / "installation-id").is_file()


def test_an_explicit_queue_name_wins(tmp_path: Path) -> None:
    assert Settings(data_dir=tmp_path, queue_name="q1").resolved_queue_name == "q1"
    assert not (tmp_path / "installation-id").exists()


def test_postgresql_urls_get_the_asyncpg_driver() -> None:
    url = Settings(database_url="postgresql://u:p@db/cf").resolved_database_url
    assert url == "postgresql+asyncpg://u:p@db/cf"
