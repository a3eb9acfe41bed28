"""The FastAPI application. Everything stateful is built in the lifespan from the
settings, so tests can create an app per data directory and nothing connects at import."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import APIRouter, FastAPI
from fastapi.routing import APIRoute

from app.auth import bootstrap_admin_token, print_first_token
from app.blobs import BlobStore
from app.db import make_engine, make_sessionmaker
from app.debian.signing import SigningKey
from app.errors import install_error_handlers
from app.limits import BodySizeLimit, RejectControlCharacters
from app.queue import Queue
from app.routers import (
    agent,
    apt,
    artifacts,
    builds,
    clusters,
    garbage_collections,
    health,
    nodes,
    patch_series,
    plans,
    repositories,
    rollouts,
)
from app.schemas.build import BuildRequest
from app.settings import Settings, get_settings

API_PREFIX = "/api/v1"


def _operation_id(route: APIRoute) -> str:
    """Stable operation ids (tag-name) so openapi.json does not churn."""
    tag = route.tags[0] if route.tags else "default"
    return f"{tag}-{route.name}"


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        settings.ensure_dirs()
        engine = make_engine(settings.resolved_database_url)
        app.state.settings = settings
        app.state.engine = engine
        app.state.sessionmaker = make_sessionmaker(engine)
        app.state.blobs = BlobStore(settings.resolved_data_dir / "blobs")
        app.state.queue = Queue(settings.redis_url, settings.resolved_queue_name)
        app.state.signing_key = SigningKey(settings.resolved_data_dir / "gnupg")
        app.state.public_keys = {}
        await app.state.signing_key.ensure()  # the repository key, made on first start
        token = await bootstrap_admin_token(app.state.sessionmaker, settings.admin_token)
        if token:
            print_first_token(token)
        try:
            yield
        finally:
            await app.state.signing_key.stop_agent()
            await app.state.queue.close()
            await engine.dispose()

    app = FastAPI(
        title="ClusterForge",
        version="0.1.0",
        description="Builds, publishes, installs and proves the software of a Debian "
        "high-availability cluster. Every /api/v1 route except /healthz needs "
        "`Authorization: Bearer <token>`.",
        lifespan=lifespan,
        generate_unique_id_function=_operation_id,
    )
    install_error_handlers(app)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_upload_bytes)
    app.add_middleware(RejectControlCharacters)

    api = APIRouter(prefix=API_PREFIX)
    for module in (health, builds, artifacts, patch_series, repositories,
                   garbage_collections, nodes, plans, clusters, rollouts, agent):
        api.include_router(module.router)
    app.include_router(api)
    app.include_router(apt.router)
    app.add_api_route("/healthz", health.healthz, include_in_schema=False)
    _publish_extra_schemas(app)
    return app


def _publish_extra_schemas(app: FastAPI) -> None:
    """Models used only in hand-written request bodies (POST /builds takes JSON or
    multipart) are added to components/schemas so the spec's $refs resolve."""
    base_openapi = app.openapi

    def openapi() -> dict:
        if app.openapi_schema:
            return app.openapi_schema
        spec = base_openapi()
        schemas = spec.setdefault("components", {}).setdefault("schemas", {})
        for model in (BuildRequest,):
            schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
            for name, sub in schema.pop("$defs", {}).items():
                schemas.setdefault(name, sub)
            schemas[model.__name__] = schema
        app.openapi_schema = spec
        return spec

    app.openapi = openapi  # type: ignore[method-assign]


def __getattr__(name: str):
    """`uvicorn app.main:app` builds the app from the environment on first access."""
    if name == "app":
        application = create_app()
        globals()["app"] = application
        return application
    raise AttributeError(name)
