"""The Alembic migrations build exactly the schema the models describe: a model
change without its migration would work in tests that create tables from the models
and fail on a real upgrade."""

from __future__ import annotations

from alembic import command
from alembic.config import Config

from tests.conftest import PROJECT_ROOT, alembic_upgrade


def test_migrations_match_the_models(tmp_path):
    url = f"sqlite+aiosqlite:///{tmp_path / 'schema.db'}"
    alembic_upgrade(url)
    cfg = Config(str(PROJECT_ROOT / "alembic.ini"))
    cfg.set_main_option("sqlalchemy.url", url)
    cfg.attributes["configure_logger"] = False
    command.check(cfg)  # raises when autogenerate would emit any operation
