"""The build pipeline: fetch -> verify -> unpack -> patch -> version -> build-deps ->
build -> store. Each step is named on the build row and in its log; each failure says
what to fix (which file, which patch and hunk, which dependency)."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
from pathlib import Path

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError

from app.blobs import BlobStore
from app.debian.apt_sources import AptConfigError, PrivateApt, SourceNotFound
from app.debian.changelog import add_entry, read_top
from app.debian.debfile import control_fields
from app.debian.dsc import DscError, parse_dsc, verify_files
from app.debian.local_version import local_version
from app.debian.patches import SeriesError, describe_failure
from app.models import Artifact, ArtifactKind, Build
from app.models.artifact import ArtifactRole
from app.models.build import BuildOrigin
from app.proc import CommandTimeout, run
from app.services.patch_library import SeriesNotFound, load_series
from workers.context import WorkerContext
from workers.job import Job, StepFailed, read_or_retry

OUTPUT_KINDS = {
    ".deb": ArtifactKind.deb, ".udeb": ArtifactKind.udeb, ".ddeb": ArtifactKind.ddeb,
    ".buildinfo": ArtifactKind.buildinfo, ".changes": ArtifactKind.changes,
}


class BuildPipeline:
    def __init__(self, job: Job, build: Build, blobs: BlobStore) -> None:
        self.job = job
        self.build = build
        self.blobs = blobs
        self.settings = job.settings
        self.work = self.settings.resolved_data_dir / "work" / f"build-{build.id}"
        self.src_dir = self.work / "src"
        self.out_dir = self.work / "out"
        self.tree = self.out_dir / "tree"
        self.dsc: Path | None = None
        self.base_version = ""
        self.patch_files: list[tuple[str, Path, int]] = []  # (label, path, strip)
        self.marker = build_marker(build)

    @property
    def run_options(self) -> dict:
        """What every command of this build shares: its process group is recorded on
        the row, and it carries the build's marker so nothing of it escapes a kill."""
        return {"on_spawn": self.job.set_process_group, "marker": self.marker}

    async def cmd(self, argv: list[str], *, cwd: Path | None = None,
                  env: dict[str, str] | None = None, timeout: float | None = None):
        full_env = {"HOME": str(self.work / "home"), "TMPDIR": str(self.work / "tmp"),
                    **(env or {})}
        try:
            return await run(argv, self.job.log, cwd=cwd, env=full_env,
                             timeout=timeout or self.settings.command_timeout,
                             **self.run_options)
        except CommandTimeout as exc:
            raise StepFailed(str(exc)) from exc

    async def __call__(self, job: Job) -> None:
        try:
            async with job.step("fetch"):
                await self.fetch()
            async with job.step("verify"):
                await self.verify()
            async with job.step("unpack"):
                await self.unpack()
            async with job.step("patch"):
                await self.patch()
            async with job.step("version"):
                await self.version()
            async with job.step("build-deps"):
                await self.build_deps()
            async with job.step("build"):
                await self.dpkg_buildpackage()
            async with job.step("store"):
                await self.store()
        finally:
            await asyncio.to_thread(shutil.rmtree, self.work, True)

    async def after_finish(self, status: str) -> None:
        """Called by Job once the final state is written (not when a stopping worker
        hands the build back): the stored log is then the complete one."""
        await self.store_log()

    async def fetch(self) -> None:
        await asyncio.to_thread(shutil.rmtree, self.work, True)
        for sub in (self.src_dir, self.out_dir, self.work / "home", self.work / "tmp"):
            sub.mkdir(parents=True)
        async with self.job.sessionmaker() as session:
            inputs = (await session.scalars(
                select(Artifact).where(Artifact.build_id == self.build.id,
                                       Artifact.role == ArtifactRole.input)
                .order_by(Artifact.position, Artifact.id))).all()
        patch_dir = self.work / "patches"
        patch_dir.mkdir()
        for a in inputs:
            target = (patch_dir if a.kind == ArtifactKind.patch else self.src_dir) / a.filename
            await asyncio.to_thread(self.blobs.copy_to, a.sha256, target)
            self.job.log.write(f"input {a.filename} ({a.size} bytes, sha256 {a.sha256})")
        if self.build.origin == BuildOrigin.apt:
            # Per host: each worker host derives it from its own /etc/apt.
            apt = PrivateApt(self.settings.resolved_data_dir / "apt" / socket.gethostname(),
                             max_age=self.settings.apt_update_interval)
            try:
                await apt.update(self.job.log, self.settings.command_timeout,
                                 **self.run_options)
                self.dsc = await apt.download_source(
                    self.build.source, self.build.requested_version, self.src_dir,
                    self.job.log, self.settings.command_timeout, **self.run_options)
            except (SourceNotFound, AptConfigError) as exc:
                raise StepFailed(str(exc)) from exc
            if not inputs:
                await self.keep_fetched_source()
        else:
            dscs = sorted(self.src_dir.glob("*.dsc"))
            if len(dscs) != 1:
                raise StepFailed("the build's inputs hold no .dsc")
            self.dsc = dscs[0]
        self.patch_files = []
        if self.build.series:
            try:
                series = load_series(self.settings.patches_dir, self.build.source,
                                     self.build.series)
            except (SeriesNotFound, SeriesError) as exc:
                raise StepFailed(str(exc)) from exc
            for entry in series.entries:
                self.patch_files.append(
                    (f"{self.build.source}/{self.build.series}/{entry.name}",
                     series.patch_path(entry), entry.strip))
        for a in inputs:
            if a.kind == ArtifactKind.patch:
                self.patch_files.append((f"uploaded {a.filename}", patch_dir / a.filename, 1))

    async def keep_fetched_source(self) -> None:
        """Keep what apt fetched as the build's inputs: the build can be audited and
        repeated from exactly these files, even after the archive moved on."""
        async with self.job.sessionmaker() as session:
            for index, path in enumerate(sorted(self.src_dir.iterdir())):
                sha, size = await asyncio.to_thread(self.blobs.put_file, path)
                session.add(Artifact(
                    build_id=self.build.id, role=ArtifactRole.input, position=index,
                    kind=ArtifactKind.dsc if path.suffix == ".dsc" else ArtifactKind.source,
                    filename=path.name, sha256=sha, size=size))
            await session.commit()

    async def verify(self) -> None:
        assert self.dsc is not None
        try:
            info = parse_dsc(self.dsc.read_bytes())
        except DscError as exc:
            raise StepFailed(f"{self.dsc.name}: {exc}") from exc
        if info.source != self.build.source:
            raise StepFailed(f"{self.dsc.name} is for source {info.source}, not "
                             f"{self.build.source}")
        problems = await asyncio.to_thread(verify_files, info, self.src_dir, self.dsc.name)
        if problems:
            raise StepFailed("source files do not match the .dsc: " + "; ".join(problems))
        self.base_version = info.version
        for f in info.files:
            self.job.log.write(f"verified {f.name}: size {f.size}, "
                               + ", ".join(sorted(f.checksums)))
        await self.job.update_row(base_version=info.version)

    async def unpack(self) -> None:
        assert self.dsc is not None
        result = await self.cmd(["dpkg-source", "--no-check", "-x", str(self.dsc),
                                 str(self.tree)], cwd=self.out_dir)
        if not result.ok:
            raise StepFailed(f"dpkg-source -x failed: {_last_line(result.output)}")

    async def patch(self) -> None:
        if not self.patch_files:
            self.job.log.write("no patches to apply")
        for label, path, strip in self.patch_files:
            # --fuzz=0: as strict as dpkg-source and quilt, so a series that builds here
            # also applies with Debian's own tools.
            argv = ["patch", f"-p{strip}", "--batch", "--forward", "--fuzz=0",
                    "--no-backup-if-mismatch", "--reject-file=-", "-i", str(path)]
            dry = await self.cmd([*argv, "--dry-run"], cwd=self.tree)
            if not dry.ok:
                raise StepFailed(describe_failure(label, dry.output, strip))
            applied = await self.cmd(argv, cwd=self.tree)
            if not applied.ok:
                raise StepFailed(describe_failure(label, applied.output, strip))

    async def _allocate_number(self) -> int:
        """The next +cfN for this source and version: numbers only go up, and the
        unique constraint settles a race between two workers. A build that was queued
        again after a worker stopped keeps the number it already had."""
        async with self.job.sessionmaker() as session:
            kept = (await session.execute(
                select(Build.local_number, Build.base_version).where(Build.id == self.build.id)
            )).one()
        if kept.local_number is not None and kept.base_version == self.base_version:
            return kept.local_number
        for _ in range(20):
            async with self.job.sessionmaker() as session:
                current = await session.scalar(
                    select(func.max(Build.local_number)).where(
                        Build.source == self.build.source,
                        Build.base_version == self.base_version))
                number = (current or 0) + 1
                try:
                    await session.execute(update(Build).where(Build.id == self.build.id)
                                          .values(local_number=number))
                    await session.commit()
                    return number
                except IntegrityError:
                    await session.rollback()
        raise StepFailed("could not allocate a local version number")

    async def version(self) -> None:
        changelog = self.tree / "debian" / "changelog"
        package, top_version, _ = read_top(changelog)
        number = await self._allocate_number()
        new_version = local_version(self.base_version, self.settings.version_suffix, number)
        if self.build.series:
            what = f"patch series {self.build.source}/{self.build.series}"
            names = [label.rsplit("/", 1)[-1] for label, _, _ in self.patch_files
                     if not label.startswith("uploaded ")]
            lines = [f"Rebuilt by ClusterForge (build {self.build.id}) with {what}: "
                     + ", ".join(names)]
        else:
            lines = [f"Rebuilt by ClusterForge (build {self.build.id}) without a patch series."]
        uploaded = [label.removeprefix("uploaded ") for label, _, _ in self.patch_files
                    if label.startswith("uploaded ")]
        if uploaded:
            lines.append("Uploaded patches: " + ", ".join(uploaded))
        await asyncio.to_thread(add_entry, changelog, new_version, lines,
                                self.settings.maintainer)
        self.job.log.write(f"{package}: {top_version} -> {new_version}")
        await self.job.update_row(version=new_version)
        self.build.version = new_version

    async def build_deps(self) -> None:
        check = await self.cmd(["dpkg-checkbuilddeps"], cwd=self.tree)
        if check.ok:
            return
        missing = _unmet(check.output)
        if not self.build.options.get("install_build_deps"):
            raise StepFailed(
                f"missing build dependencies: {missing}. Install them on the worker host, "
                "or ask for install_build_deps")
        install = await self.cmd(
            ["apt-get", "build-dep", "-y", "--no-install-recommends",
             "-o", "DPkg::Lock::Timeout=900", "./"], cwd=self.tree,
            env={"DEBIAN_FRONTEND": "noninteractive"})
        if not install.ok:
            raise StepFailed(f"installing build dependencies ({missing}) failed: "
                             f"{_last_line(install.output)}")
        again = await self.cmd(["dpkg-checkbuilddeps"], cwd=self.tree)
        if not again.ok:
            raise StepFailed(f"build dependencies still missing: {_unmet(again.output)}")

    async def dpkg_buildpackage(self) -> None:
        tokens = list(self.build.options.get("deb_build_options") or [])
        if not any(t.startswith("parallel=") for t in tokens):
            tokens.append(f"parallel={os.cpu_count() or 1}")
        result = await self.cmd(
            ["dpkg-buildpackage", "-b", "-us", "-uc"], cwd=self.tree,
            env={"DEB_BUILD_OPTIONS": " ".join(tokens), "LC_ALL": "C.UTF-8"},
            timeout=self.settings.build_timeout)
        if not result.ok:
            raise StepFailed(f"dpkg-buildpackage failed (exit {result.returncode}): "
                             f"{_last_line(result.output)}; see the build log")

    async def store(self) -> None:
        outputs = sorted(p for p in self.out_dir.iterdir()
                         if p.is_file() and p.suffix in OUTPUT_KINDS)
        if not any(p.suffix in (".deb", ".udeb") for p in outputs):
            raise StepFailed("dpkg-buildpackage produced no binary packages")
        async with self.job.sessionmaker() as session:
            for index, path in enumerate(outputs):
                sha, size, md5 = await asyncio.to_thread(self.blobs.put_deb, path)
                fields = package = version = arch = None
                kind = OUTPUT_KINDS[path.suffix]
                if kind in (ArtifactKind.deb, ArtifactKind.udeb, ArtifactKind.ddeb):
                    fields = await asyncio.to_thread(control_fields, path)
                    package, version = fields.get("Package"), fields.get("Version")
                    arch = fields.get("Architecture")
                session.add(Artifact(
                    build_id=self.build.id, role=ArtifactRole.output, position=index,
                    kind=kind, filename=path.name, sha256=sha, md5=md5, size=size,
                    control=fields, package=package, version=version, architecture=arch))
                self.job.log.write(f"stored {path.name} ({size} bytes, sha256 {sha})")
            await session.commit()

    async def store_log(self) -> None:
        """Keep the log as an artifact too, whatever the outcome."""
        try:
            sha, size = await asyncio.to_thread(self.blobs.put_file, self.job.log.path)
            async with self.job.sessionmaker() as session:
                session.add(Artifact(
                    build_id=self.build.id, role=ArtifactRole.output, position=10_000,
                    kind=ArtifactKind.log, filename=f"build-{self.build.id}.log", sha256=sha,
                    size=size))
                await session.commit()
        except Exception as exc:  # never mask the build's own outcome
            self.job.log.write(f"warning: could not store the log as an artifact: {exc}")


def build_marker(build: Build) -> str:
    """Marks every process of one build (see app.proc.kill_marked)."""
    return f"build-{build.id}-{build.queue_key}"


def _last_line(output: str) -> str:
    lines = [ln for ln in output.strip().splitlines() if ln.strip()]
    return lines[-1].strip() if lines else "no output"


def _unmet(output: str) -> str:
    for line in output.splitlines():
        for marker in ("Unmet build dependencies:", "Build conflicts:"):
            if marker in line:
                return line.split(marker, 1)[1].strip()
    return _last_line(output)


async def run_build(ctx: WorkerContext, build_id: int) -> str:
    """arq entry point: only the id travels through Redis."""
    job = Job(ctx, build_id)
    build = await read_or_retry(ctx, lambda session: session.get(Build, build_id))
    if build is None:
        return "skipped: no such build"
    return await job.execute(BuildPipeline(job, build, ctx["blobs"]))
