"""POST/GET /builds: build a source package (uploaded, or by name from apt) with a
patch series into binary packages; follow, tail and cancel it."""

from __future__ import annotations

import asyncio
import json
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import PlainTextResponse
from pydantic import ValidationError
from starlette.datastructures import UploadFile

from app.debian.names import PACKAGE_PATTERN
from app.deps import AdminDep, BlobsDep, DbId, Offset, QueueDep, SessionDep, SettingsDep
from app.errors import ApiError
from app.joblog import log_path, read_chunk
from app.limits import BodyTooLarge
from app.models import JobStatus
from app.models.build import BuildOrigin, build_job_id
from app.schemas.build import BuildList, BuildOptions, BuildOut, BuildRequest
from app.services import builds as service

router = APIRouter(prefix="/builds", tags=["builds"])

_MULTIPART_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "files": {"type": "array", "items": {"type": "string", "format": "binary"},
                  "description": "The .dsc and every file it lists."},
        "patches": {"type": "array", "items": {"type": "string", "format": "binary"},
                    "description": "Patch files applied in this order, after the series."},
        "source": {"type": "string", "description": "Source name (instead of files)."},
        "version": {"type": "string"},
        "series": {"type": "string", "description": "A series in patches/<source>/."},
        "install_build_deps": {"type": "boolean"},
        "deb_build_options": {"type": "string", "description": "Space-separated tokens."},
    },
}
_OPENAPI_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/BuildRequest"}},
            "multipart/form-data": {"schema": _MULTIPART_SCHEMA},
        },
    }
}


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}
JSON_BODY_LIMIT = 64 * 1024


async def _json_body(request: Request) -> dict[str, Any]:
    """A build request is small: read at most 64 KiB of JSON, and refuse what does not
    parse (including pathologically nested input) with a 422."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > JSON_BODY_LIMIT:
            raise ApiError(413, "payload_too_large",
                           f"a JSON build request is limited to {JSON_BODY_LIMIT} bytes")
        chunks.append(chunk)
    try:
        fields = json.loads(b"".join(chunks))
    except (ValueError, RecursionError) as exc:
        raise ApiError(422, "malformed_body",
                       f"body is not valid JSON: {str(exc)[:200]}") from exc
    if not isinstance(fields, dict):
        raise ApiError(422, "malformed_body", "the JSON body must be an object")
    return fields


def _validate(model: type, data: dict[str, Any], loc: str = "body"):
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise RequestValidationError(
            [{**e, "loc": (loc, *e["loc"])} for e in exc.errors(include_url=False)]
        ) from exc


async def _from_multipart(request: Request):
    try:
        form = await request.form(max_files=1000, max_fields=100, max_part_size=1024 * 1024)
    except BodyTooLarge:
        raise
    except Exception as exc:  # malformed multipart
        raise ApiError(422, "malformed_body", f"malformed multipart body: {exc}") from exc
    files = [service.UploadedFile(f.filename or "", f.file)
             for f in form.getlist("files") if isinstance(f, UploadFile)]
    patches = [service.UploadedFile(f.filename or "", f.file)
               for f in form.getlist("patches") if isinstance(f, UploadFile)]
    unknown = sorted(set(form.keys()) - set(_MULTIPART_SCHEMA["properties"]))
    if unknown:
        raise ApiError(422, "validation_error", f"unknown form fields: {', '.join(unknown)}",
                       {"fields": unknown})
    fields: dict[str, Any] = {}
    for key in ("source", "version", "series"):
        value = form.get(key)
        if isinstance(value, str) and value.strip():
            fields[key] = value.strip()
    if isinstance(flag := form.get("install_build_deps"), str):
        value = flag.strip().lower()
        if value not in _TRUE | _FALSE:
            raise ApiError(422, "validation_error",
                           f"install_build_deps must be true or false, not {flag[:40]!r}")
        fields["install_build_deps"] = value in _TRUE
    if isinstance(dbo := form.get("deb_build_options"), str):
        fields["deb_build_options"] = dbo.split()
    return files, patches, fields


@router.post("", status_code=202, response_model=BuildOut, openapi_extra=_OPENAPI_BODY,
             responses={413: {"description": "Body over the upload limit"},
                        422: {"description": "Invalid names, checksums, patches or fields"}})
async def create_build(
    request: Request, response: Response, session: SessionDep, blobs: BlobsDep,
    queue: QueueDep, settings: SettingsDep, _: AdminDep,
) -> BuildOut:
    """Queue a build. JSON names a source package to fetch from the worker host's apt
    sources; multipart uploads a .dsc with its files (and/or patch files)."""
    content_type = request.headers.get("content-type", "")
    files: list[service.UploadedFile] = []
    patches: list[service.UploadedFile] = []
    if content_type.startswith("multipart/form-data"):
        files, patches, fields = await _from_multipart(request)
    elif content_type.startswith("application/json"):
        fields = await _json_body(request)
    else:
        raise ApiError(415, "unsupported_media_type",
                       "send application/json (a source by name) or multipart/form-data "
                       "(an uploaded .dsc with its files)")

    if files:
        await asyncio.to_thread(service.check_names, files, "files")
        info = await asyncio.to_thread(service.verify_upload, files)
        for key, actual in (("source", info.source), ("version", info.version)):
            if key in fields and fields[key] != actual:
                raise ApiError(422, "validation_error",
                               f"{key} {fields[key][:200]!r} does not match the .dsc ({actual})")
        options = _validate(BuildOptions, {k: v for k, v in fields.items()
                                           if k not in ("source", "version", "series")})
        origin, source, version = BuildOrigin.upload, info.source, info.version
        series = fields.get("series")
        if series is not None:
            _validate(BuildRequest, {"source": source, "series": series})
    else:
        req = _validate(BuildRequest, fields)
        options = BuildOptions(**req.model_dump(include=set(BuildOptions.model_fields)))
        origin, source, version, series = BuildOrigin.apt, req.source, req.version, req.series
    await asyncio.to_thread(service.verify_patches, patches)
    service.check_series(settings, source, series)

    # Blobs first, then one short transaction: a 2 GiB upload never holds the
    # database's write lock while it is copied.
    inputs = await service.store_blobs(blobs, files, patches)
    build = await service.create_build(
        session, origin=origin, source=source, version=version, series=series,
        patches=[p.filename for p in patches], options=options,
    )
    service.add_input_rows(session, build, inputs)
    await session.commit()
    await queue.enqueue("run_build", build_job_id(build.id, build.queue_key), build.id)
    response.headers["Location"] = f"/api/v1/builds/{build.id}"
    return await service.build_out(session, build)


@router.get("", response_model=BuildList)
async def list_builds(
    session: SessionDep, _: AdminDep,
    status: JobStatus | None = None,
    source: Annotated[str | None, Query(pattern=PACKAGE_PATTERN, max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Offset = 0,
) -> BuildList:
    rows, total = await service.list_builds(session, status, source, limit, offset)
    return BuildList(items=[await service.build_out(session, b, with_artifacts=False)
                            for b in rows], total=total)


@router.get("/{build_id}", response_model=BuildOut)
async def get_build(build_id: DbId, session: SessionDep, _: AdminDep) -> BuildOut:
    return await service.build_out(session, await service.get_build(session, build_id))


@router.get("/{build_id}/log", response_class=PlainTextResponse,
            responses={200: {"content": {"text/plain": {}},
                             "description": "Log text from `offset`; headers X-Next-Offset "
                                            "(pass it back as offset) and X-Build-Status."}})
async def get_log(
    build_id: DbId, session: SessionDep, settings: SettingsDep, _: AdminDep,
    offset: Offset = 0,
    limit: Annotated[int, Query(ge=1, le=4 * 1024 * 1024)] = 1024 * 1024,
) -> Response:
    """Tail a build: poll with the X-Next-Offset of the previous answer until
    X-Build-Status is finished and no new text comes."""
    build = await service.get_build(session, build_id)
    path = log_path(settings.resolved_data_dir, "builds", build_id)
    data, next_offset = await asyncio.to_thread(read_chunk, path, offset, limit)
    # The bytes as stored: X-Next-Offset counts bytes, and a chunk may end inside a
    # UTF-8 character that the next chunk completes.
    return Response(
        data, media_type="text/plain; charset=utf-8",
        headers={"X-Next-Offset": str(next_offset), "X-Build-Status": build.status},
    )


@router.post("/{build_id}/cancel", response_model=BuildOut, status_code=202)
async def cancel(build_id: DbId, session: SessionDep, _: AdminDep) -> BuildOut:
    """Cancel a queued or running build; its whole process group is killed."""
    build = await service.cancel_build(session, build_id)
    await session.commit()  # before the answer: a 202 means the request is recorded
    return await service.build_out(session, build)
