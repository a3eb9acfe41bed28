"""What every pipeline job shares: claiming the row, a lease renewed while it runs,
watching for cancellation, named steps recorded on the row and in the log, and one
honest final state. The database row is the truth; arq only delivered the id."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from arq import Retry
from sqlalchemy import select, update
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncSession

from app.joblog import JobLog, log_path
from app.models import Build, JobStatus
from app.models.job import JobColumns
from workers.context import WorkerContext

log = logging.getLogger(__name__)


T = TypeVar("T")


async def read_or_retry(ctx: WorkerContext,
                        read: Callable[[AsyncSession], Awaitable[T]]) -> T:
    """What an arq entry point reads before it claims its row. With the database
    briefly unreachable nothing was claimed yet, so arq tries again later rather than
    strand the row as 'queued' behind its stored result."""
    try:
        async with ctx["sessionmaker"]() as session:
            return await read(session)
    except (OperationalError, InterfaceError) as exc:
        raise Retry(defer=min(60, 5 * ctx.get("job_try", 1))) from exc


class StepFailed(Exception):
    """A step failed for a reason the user can act on; the message says which."""


def _now() -> datetime:
    return datetime.now(UTC)


class Job:
    """One running job of any kind whose table has the JobColumns (a build by default)."""

    def __init__(self, ctx: WorkerContext, job_id: int, model: type[JobColumns] = Build,
                 kind: str = "builds", deadline: float | None = None) -> None:
        self.ctx = ctx
        self.id = job_id
        self.model: Any = model
        self.kind = kind
        self._deadline = deadline
        self.settings = ctx["settings"]
        self.sessionmaker = ctx["sessionmaker"]
        self.log = JobLog(log_path(self.settings.resolved_data_dir, self.kind, job_id))
        self.steps: list[dict[str, Any]] = []
        self.current_step: str | None = None
        self._cancel_reason: str | None = None

    async def claim(self) -> bool:
        """queued -> running, atomically; False if someone else has it or it was cancelled."""
        now = _now()
        async with self.sessionmaker() as session:
            result = await session.execute(
                update(self.model)
                .where(self.model.id == self.id, self.model.status == JobStatus.queued)
                .values(status=JobStatus.running, started_at=now, worker=self.ctx["worker_name"],
                        lease_expires_at=now + timedelta(seconds=self.settings.lease_seconds),
                        steps=[])
            )
            await session.commit()
        return result.rowcount == 1

    async def update_row(self, **values: Any) -> None:
        async with self.sessionmaker() as session:
            await session.execute(
                update(self.model).where(self.model.id == self.id).values(**values))
            await session.commit()

    async def set_process_group(self, pgid: int | None) -> None:
        await self.update_row(process_group=pgid)

    @contextlib.asynccontextmanager
    async def step(self, name: str) -> AsyncIterator[None]:
        """A named step: recorded on the row (current step, timings) and in the log."""
        record: dict[str, Any] = {"name": name, "status": "running",
                                  "started_at": _now().isoformat()}
        self.steps.append(record)
        self.current_step = name
        self.log.write(f"===== step {len(self.steps)}: {name}")
        await self.update_row(step=name, steps=list(self.steps))
        started = time.monotonic()
        try:
            yield
        except BaseException as exc:
            record["status"] = "cancelled" if isinstance(exc, asyncio.CancelledError) else "failed"
            if isinstance(exc, StepFailed):
                record["message"] = clean_text(str(exc))
            raise
        else:
            record["status"] = "succeeded"
        finally:
            record["finished_at"] = _now().isoformat()
            record["seconds"] = round(time.monotonic() - started, 3)
            with contextlib.suppress(Exception):
                await asyncio.shield(self.update_row(steps=list(self.steps)))

    async def _keep_lease(self, task: asyncio.Task) -> None:
        """Renew the lease and watch for a cancel request (checked every second)."""
        renew_every = max(1.0, self.settings.lease_seconds / 3)
        last_renew = time.monotonic()
        while not task.done():
            await asyncio.sleep(1)
            try:
                async with self.sessionmaker() as session:
                    row = (await session.execute(
                        select(self.model.status, self.model.cancel_requested)
                        .where(self.model.id == self.id)
                    )).one()
                    if row.cancel_requested:
                        self._cancel_reason = "cancelled on request"
                    elif row.status != JobStatus.running:
                        self._cancel_reason = f"the job was marked {row.status} meanwhile"
                    if self._cancel_reason:
                        task.cancel()
                        return
                    if time.monotonic() - last_renew >= renew_every:
                        await session.execute(
                            update(self.model).where(self.model.id == self.id).values(
                                lease_expires_at=_now()
                                + timedelta(seconds=self.settings.lease_seconds))
                        )
                        await session.commit()
                        last_renew = time.monotonic()
            except Exception as exc:  # a DB hiccup must not kill the job; the lease says
                log.warning("lease renewal for %s %s failed: %s", self.kind, self.id, exc)

    async def finish(self, status: JobStatus, error: str | None = None) -> None:
        error = clean_text(error) if error else None
        self.log.write(f"===== {status}" + (f": {error}" if error else ""))
        async with self.sessionmaker() as session:
            await session.execute(
                update(self.model)
                .where(self.model.id == self.id, self.model.status == JobStatus.running)
                .values(status=status, error=error, finished_at=_now(), lease_expires_at=None,
                        process_group=None,
                        step=self.current_step if status != JobStatus.succeeded else None)
            )
            await session.commit()

    async def requeue(self, reason: str) -> None:
        """Put the job back to 'queued' (a graceful worker stop): it starts over on the
        next worker, keeping its inputs and, for a build, its +cfN number."""
        self.log.write(f"===== {reason}; queued again, it starts over on the next worker")
        async with self.sessionmaker() as session:
            await session.execute(
                update(self.model)
                .where(self.model.id == self.id, self.model.status == JobStatus.running)
                .values(status=JobStatus.queued, started_at=None, step=None, error=None,
                        lease_expires_at=None, worker=None, process_group=None)
            )
            await session.commit()

    @staticmethod
    async def _surely(coro) -> None:
        """Await `coro` to the end even if this task is cancelled again meanwhile (a
        second signal): the row must never be left 'running' by a stopping worker."""
        inner = asyncio.ensure_future(coro)
        while not inner.done():
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(inner)
        inner.result()

    @property
    def deadline(self) -> float:
        """The whole pipeline's limit; for a build, its timeout plus the other commands'."""
        if self._deadline is not None:
            return self._deadline
        return self.settings.build_timeout + 4 * self.settings.command_timeout

    async def execute(self, pipeline) -> str:
        """Run `pipeline(job)` under the lease; map every outcome to a final status."""
        if not await self.claim():
            return "skipped: not queued"
        task = asyncio.current_task()
        assert task is not None
        keeper = asyncio.create_task(self._keep_lease(task))
        status, error = JobStatus.failed, None
        try:
            async with asyncio.timeout(self.deadline):
                await pipeline(self)
            status = JobStatus.succeeded
        except TimeoutError:
            error = (f"exceeded the overall time limit of {self.deadline:.0f} s "
                     f"in step {self.current_step}")
        except asyncio.CancelledError:
            if self._cancel_reason is None:
                # The worker is stopping (SIGTERM/SIGINT): hand the job back, then let
                # arq know, which keeps it in its queue for the next worker.
                await self._surely(self.requeue(
                    f"worker stopped during step {self.current_step}"))
                raise
            uncancel = getattr(task, "uncancel", None)
            if uncancel:
                uncancel()
            status = JobStatus.cancelled
            error = self._cancel_reason
        except StepFailed as exc:
            error = str(exc)
        except Exception as exc:  # a bug or an unexpected tool failure: still a result
            log.exception("%s %s failed unexpectedly", self.kind, self.id)
            error = f"unexpected error in step {self.current_step}: {type(exc).__name__}: {exc}"
        finally:
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper
        await self._surely(self.finish(status, error))
        after = getattr(pipeline, "after_finish", None)
        if after is not None:
            await self._surely(after(str(status)))
        return str(status)


def clean_text(text: str, limit: int = 4000) -> str:
    """Text safe for any database column: no NUL (PostgreSQL refuses it), bounded."""
    text = text.replace("\x00", "\N{REPLACEMENT CHARACTER}")
    return text if len(text) <= limit else text[: limit - 1] + "\N{HORIZONTAL ELLIPSIS}"
