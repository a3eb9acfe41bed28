"""The apt tree, outside /api/v1: /apt/<repository>/{dists,pool,key.asc,key.gpg,sources}.

Everything is looked up in the database and streamed from the blob store: dists/
files through the suite's current publication (one row read, so a switch is atomic
for every request), by-hash files through any publication of the suite (so a client
mid-update still finds what the InRelease it read names), pool files through the
publication entries of the repository."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from datetime import UTC, datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi import Path as PathParam
from sqlalchemy import select

from app.auth import find_token
from app.debian.signing import SigningKey
from app.deps import BlobsDep, SessionDep, SettingsDep
from app.errors import ApiError
from app.http_files import IMMUTABLE, REVALIDATE, file_response, media_type_for
from app.models import (
    Node,
    Publication,
    PublicationFile,
    Repository,
    RepositoryCredential,
    RepositoryPoolFile,
    RepositorySuite,
    TokenKind,
)
from app.schemas.repository import DIST_NAME_PATTERN, REPO_NAME_PATTERN
from app.services.clusters import cluster_of
from app.services.repositories import base_url, hash_password

router = APIRouter(prefix="/apt", tags=["apt"])

RepoName = Annotated[str, PathParam(pattern=REPO_NAME_PATTERN, max_length=64)]
SuiteName = Annotated[str, PathParam(pattern=DIST_NAME_PATTERN, max_length=64)]
_BY_HASH = re.compile(r"^(?P<dir>.+)/by-hash/SHA256/(?P<sha>[0-9a-f]{64})$")


def get_and_head(path: str):
    """GET in the OpenAPI spec, and the same handler for HEAD (apt and caches use it)
    without a second, duplicate operation in the spec."""
    def register(fn):
        router.add_api_route(path, fn, methods=["HEAD"], include_in_schema=False)
        return router.get(path)(fn)
    return register


def _not_found(what: str) -> ApiError:
    return ApiError(404, "not_found", f"{what} does not exist")


def _unauthorized(repo: str) -> ApiError:
    return ApiError(401, "unauthorized",
                    f"repository {repo} needs credentials (apt: /etc/apt/auth.conf.d/)",
                    headers={"WWW-Authenticate": f'Basic realm="ClusterForge {repo}"'})


async def _basic_credentials(request: Request) -> tuple[str, str] | None:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic" or not value:
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, sep, password = decoded.partition(":")
    if not sep or any(ord(c) < 32 or c == "\x7f" for c in decoded):
        return None  # no credential has control characters (and PostgreSQL refuses NUL)
    return user, password


async def _token_reads(session: SessionDep, token: str, repo: Repository) -> bool:
    """An admin token reads every repository; a node token the repository of its
    node's cluster (what its plan installs from), nothing else."""
    if not token or not token.isprintable():
        return False
    row = await find_token(session, token.strip())
    if row is None:
        return False
    if row.kind == TokenKind.admin:
        return True
    if row.kind != TokenKind.node or row.node_id is None:
        return False
    hostname = await session.scalar(select(Node.hostname).where(Node.id == row.node_id))
    found = hostname and await cluster_of(session, hostname)
    return bool(found) and found[1].repository == repo.name


async def readable_repository(repository: RepoName, request: Request,
                              session: SessionDep) -> Repository:
    """The repository, once the reader may read it: anyone for a public repository;
    for a read-protected one, HTTP Basic with a repository credential or, as the
    password, an admin token or the node token of a node whose cluster installs from
    it (or such a token as a Bearer token)."""
    repo = await session.scalar(select(Repository).where(Repository.name == repository))
    if repo is None:
        raise _not_found(f"repository {repository}")
    if not repo.read_protected:
        return repo
    scheme, _, bearer = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and bearer and await _token_reads(session, bearer, repo):
        return repo
    creds = await _basic_credentials(request)
    if creds is None:
        raise _unauthorized(repo.name)
    user, password = creds
    stored = await session.scalar(select(RepositoryCredential.password_hash).where(
        RepositoryCredential.repository_id == repo.id, RepositoryCredential.username == user,
        RepositoryCredential.revoked.is_(False)))
    if stored is not None and hmac.compare_digest(stored, hash_password(password)):
        return repo
    if await _token_reads(session, password, repo):
        return repo
    raise _unauthorized(repo.name)


ReadableRepo = Annotated[Repository, Depends(readable_repository)]


def _signing_key(request: Request) -> SigningKey:
    return request.app.state.signing_key


async def _public_key(request: Request, armor: bool) -> bytes:
    cache = request.app.state.public_keys
    if armor not in cache:
        cache[armor] = await _signing_key(request).public_key(armor)
    return cache[armor]


async def _key_response(request: Request, repo: Repository, armor: bool) -> Response:
    data = await _public_key(request, armor)
    etag = f'"{hashlib.sha256(data).hexdigest()}"'
    headers = {"ETag": etag, "Cache-Control": REVALIDATE}
    inm = request.headers.get("if-none-match")
    if inm is not None and etag in [t.strip() for t in inm.split(",")]:
        return Response(status_code=304, headers=headers)
    media = "application/pgp-keys" if armor else "application/octet-stream"
    body = b"" if request.method == "HEAD" else data
    headers["Content-Length"] = str(len(data))
    name = f"clusterforge-{repo.name}.{'asc' if armor else 'gpg'}"
    headers["Content-Disposition"] = f'attachment; filename="{name}"'
    return Response(body, media_type=media, headers=headers)


@get_and_head("/{repository}/key.{form}")
async def public_key(repository: RepoName, form: Literal["asc", "gpg"], request: Request,
                     session: SessionDep) -> Response:
    """The repository's public signing key: key.asc armored (for Signed-By: ...asc),
    key.gpg binary (for /etc/apt/keyrings/*.gpg). Public even for a read-protected
    repository: it is what a node needs before it has anything else."""
    repo = await session.scalar(select(Repository).where(Repository.name == repository))
    if repo is None:
        raise _not_found(f"repository {repository}")
    return await _key_response(request, repo, armor=form == "asc")


@get_and_head("/{repository}/sources/{suite}")
async def sources_entry(
    repository: RepoName, suite: SuiteName, request: Request, session: SessionDep,
    settings: SettingsDep,
    inline_key: Annotated[bool, Query(description="Embed the key in Signed-By.")] = False,
) -> Response:
    """A ready-to-paste deb822 entry for /etc/apt/sources.list.d/<repository>.sources."""
    repo = await session.scalar(select(Repository).where(Repository.name == repository))
    if repo is None:
        raise _not_found(f"repository {repository}")
    if suite not in repo.suites:
        raise _not_found(f"suite {suite} of repository {repository}")
    base = base_url(settings.public_url, str(request.base_url))
    apt_url = f"{base}/apt/{repo.name}"
    keyring = f"/etc/apt/keyrings/clusterforge-{repo.name}.asc"
    lines = [f"# ClusterForge repository {repo.name}, suite {suite}",
             f"# Save as /etc/apt/sources.list.d/clusterforge-{repo.name}.sources"]
    if inline_key:
        armored = (await _public_key(request, armor=True)).decode()
        signed_by = "\n".join(" " + (line or ".") for line in armored.strip().splitlines())
        signed_by_field = f"Signed-By:\n{signed_by}"
    else:
        lines.append(f"# Key: curl -fsSL {apt_url}/key.asc -o {keyring}")
        signed_by_field = f"Signed-By: {keyring}"
    if repo.read_protected:
        lines.append("# Read-protected: put credentials in /etc/apt/auth.conf.d/ "
                     "(POST /api/v1/repositories/<name>/credentials gives the entry)")
    lines += ["Types: deb", f"URIs: {apt_url}", f"Suites: {suite}",
              f"Components: {' '.join(repo.components)}",
              f"Architectures: {' '.join(repo.architectures)}", signed_by_field]
    return Response("\n".join(lines) + "\n", media_type="text/plain; charset=utf-8")


@get_and_head("/{repository}/dists/{suite}/{path:path}")
async def dists_file(repo: ReadableRepo, suite: SuiteName, path: str, request: Request,
                     session: SessionDep, blobs: BlobsDep) -> Response:
    """Release, InRelease, Release.gpg, Packages{,.gz,.xz} and their by-hash copies."""
    by_hash = _BY_HASH.match(path)
    if by_hash:
        row = (await session.execute(
            select(PublicationFile.sha256, Publication.published_at)
            .join(Publication, Publication.id == PublicationFile.publication_id)
            .where(Publication.repository_id == repo.id, Publication.suite == suite,
                   Publication.published_at.is_not(None),
                   PublicationFile.sha256 == by_hash["sha"],
                   PublicationFile.path.startswith(by_hash["dir"] + "/", autoescape=True))
            .limit(1))).first()
        cache = IMMUTABLE
    else:
        row = (await session.execute(
            select(PublicationFile.sha256, Publication.published_at)
            .join(Publication, Publication.id == PublicationFile.publication_id)
            .join(RepositorySuite, RepositorySuite.publication_id == Publication.id)
            .where(RepositorySuite.repository_id == repo.id, RepositorySuite.suite == suite,
                   PublicationFile.path == path))).first()
        cache = REVALIDATE
    if row is None:
        raise _not_found(f"dists/{suite}/{path} in repository {repo.name}")
    return _blob(request, blobs, row.sha256, row.published_at, path, cache)


@get_and_head("/{repository}/pool/{path:path}")
async def pool_file(repo: ReadableRepo, path: str, request: Request, session: SessionDep,
                    blobs: BlobsDep) -> Response:
    """A published .deb. Pool files never change once published (see pool_conflict)."""
    row = (await session.execute(
        select(RepositoryPoolFile.sha256, RepositoryPoolFile.created_at)
        .where(RepositoryPoolFile.repository_id == repo.id,
               RepositoryPoolFile.pool_path == f"pool/{path}"))).first()
    if row is None:
        raise _not_found(f"pool/{path} in repository {repo.name}")
    return _blob(request, blobs, row.sha256, row.created_at, path, IMMUTABLE)


def _blob(request: Request, blobs, sha256: str, modified: datetime | None, name: str,
          cache: str) -> Response:
    blob = blobs.path(sha256)
    if not blob.is_file():
        raise ApiError(410, "gone", f"{name}: the stored file is missing from the blob store")
    return file_response(request, blob, sha256=sha256,
                         last_modified=modified or datetime.now(UTC),
                         media_type=media_type_for(name), cache_control=cache)
