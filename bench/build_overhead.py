"""Acceptance benchmark: how much wall time does ClusterForge add to a package build?

Why: the service wraps Debian's own tools (apt-get source, dpkg-source, patch,
dpkg-buildpackage) in a queue, a database, a job log and a blob store. That is only
worth it if it costs little on top of doing the same work by hand. The target is
that the service adds under 10% to the wall time of a build.

What it does, in one run:
  * starts the real service as a user would (`clusterforge run`) with a temporary
    data directory, a free port, its own private redis-server on another free port
    and a random admin token;
  * service build: POST /api/v1/builds for watchdog 5.16-1 with the
    cluster-selffence series, polls GET /api/v1/builds/{id} every 0.1 s, and times
    from just before the POST to seeing `succeeded`;
  * plain build: the same work by hand in a temporary directory, with the private
    apt configuration the service wrote (APT_CONFIG): apt-get source
    --download-only, dpkg-source -x, patch -p1 for each patch in `series` order, a
    changelog entry (python-debian), dpkg-buildpackage -b -us -uc with the same
    DEB_BUILD_OPTIONS (parallel=<cpu count>);
  * one warm-up of each (not counted: it fills the apt lists and the page cache),
    then N rounds, alternating which of the two goes first;
  * prints each round, the medians, the ratio service/plain, the overhead, and the
    service's median seconds per pipeline step.

It exits 0 whatever the ratio (a benchmark reports figures; it does not assert),
and 1 only when a build failed or the service did not start.

Run: .venv/bin/python bench/build_overhead.py [--rounds N]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.utils import formatdate
from pathlib import Path

import httpx
from debian.changelog import Changelog
from service import ROOT, BenchError, BenchService

SOURCE = "watchdog"
VERSION = "5.16-1"
SERIES = "cluster-selffence"
PLAIN_VERSION = f"{VERSION}+bench1"
POLL_INTERVAL = 0.1
BUILD_TIMEOUT = 900.0




@dataclass
class Timing:
    seconds: float
    steps: dict[str, float] = field(default_factory=dict)




def deb_build_options() -> str:
    """What the worker sets when the build asks for no options of its own."""
    return f"parallel={os.cpu_count() or 1}"


# --------------------------------------------------------------------------- service


class Service(BenchService):
    """The service, plus what this benchmark asks of it."""

    def build(self, client: httpx.Client) -> Timing:
        headers = {"Authorization": f"Bearer {self.token}"}
        body = {"source": SOURCE, "version": VERSION, "series": SERIES}
        started = time.monotonic()
        response = client.post(f"{self.base}/api/v1/builds", json=body, headers=headers)
        if response.status_code != 202:
            raise BenchError(f"POST /api/v1/builds answered {response.status_code}: "
                             f"{response.text[:500]}")
        build_id = response.json()["id"]
        deadline = started + BUILD_TIMEOUT
        while True:
            row = client.get(f"{self.base}/api/v1/builds/{build_id}", headers=headers)
            row.raise_for_status()
            data = row.json()
            if data["status"] == "succeeded":
                seconds = time.monotonic() - started
                break
            if data["status"] in ("failed", "cancelled"):
                raise BenchError(f"service build {build_id} {data['status']}: {data['error']} "
                                 f"(log: {self.data_dir}/logs/builds/)")
            if time.monotonic() > deadline:
                raise BenchError(f"service build {build_id} still {data['status']} after "
                                 f"{BUILD_TIMEOUT:.0f} s")
            time.sleep(POLL_INTERVAL)
        steps = {s["name"]: float(s["seconds"] or 0.0) for s in data["steps"]}
        return Timing(seconds, steps)


# ----------------------------------------------------------------------------- plain


def series_patches() -> list[Path]:
    directory = ROOT / "patches" / SOURCE / SERIES
    names = []
    for line in (directory / "series").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            names.append(line.split()[0])
    return [directory / n for n in names]


@contextlib.contextmanager
def timed(steps: dict[str, float], name: str) -> Iterator[None]:
    started = time.monotonic()
    try:
        yield
    finally:
        steps[name] = time.monotonic() - started


def run_logged(argv: list[str], log: Path, *, cwd: Path, env: dict[str, str]) -> None:
    """Run one command with its output appended to a log file, as the worker does."""
    with log.open("ab") as fh:
        result = subprocess.run(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                                stdout=fh, stderr=subprocess.STDOUT, check=False)
    if result.returncode != 0:
        raise BenchError(f"plain build: {argv[0]} exited {result.returncode}; see {log}")


def add_changelog_entry(changelog: Path) -> None:
    with changelog.open(encoding="utf-8", errors="replace") as fh:
        cl = Changelog(fh)
    cl.new_block(package=cl.package, version=PLAIN_VERSION, distributions=cl.distributions,
                 urgency="medium", author="Bench <bench@localhost>",
                 date=formatdate(localtime=False, usegmt=False),
                 changes=["", f"  * Rebuilt by hand with patch series {SERIES}.", ""])
    changelog.write_text(str(cl), encoding="utf-8")


def plain_build(apt_conf: Path, scratch: Path, patches: list[Path]) -> Timing:
    """The service's pipeline done by hand with Debian's tools; timed as a whole."""
    work = Path(tempfile.mkdtemp(prefix="plain-", dir=scratch))
    log = work.parent / f"{work.name}.log"
    env = {**os.environ, "APT_CONFIG": str(apt_conf), "LC_ALL": "C.UTF-8",
           "DEB_BUILD_OPTIONS": deb_build_options()}
    steps: dict[str, float] = {}
    tree = work / "tree"
    started = time.monotonic()
    with timed(steps, "fetch"):
        run_logged(["apt-get", "source", "--download-only", "--only-source",
                    f"{SOURCE}={VERSION}"], log, cwd=work, env=env)
    with timed(steps, "unpack"):
        run_logged(["dpkg-source", "-x", f"{SOURCE}_{VERSION}.dsc", "tree"], log,
                   cwd=work, env=env)
    with timed(steps, "patch"):
        for p in patches:
            run_logged(["patch", "-p1", "--batch", "--forward", "-i", str(p)], log,
                       cwd=tree, env=env)
    with timed(steps, "version"):
        add_changelog_entry(tree / "debian" / "changelog")
    with timed(steps, "build"):
        run_logged(["dpkg-buildpackage", "-b", "-us", "-uc"], log, cwd=tree, env=env)
    seconds = time.monotonic() - started
    if not any(work.glob(f"*_{PLAIN_VERSION}_*.deb")):
        raise BenchError(f"plain build produced no .deb in {work}; see {log}")
    shutil.rmtree(work, ignore_errors=True)
    log.unlink(missing_ok=True)
    return Timing(seconds, steps)


# ------------------------------------------------------------------------------ main


def median_steps(timings: list[Timing]) -> dict[str, float]:
    names: list[str] = []
    for t in timings:
        names += [n for n in t.steps if n not in names]
    return {n: statistics.median(t.steps.get(n, 0.0) for t in timings) for n in names}


def report(plain: list[Timing], service: list[Timing]) -> None:
    print()
    print(f"{'round':>5}  {'plain s':>8}  {'service s':>9}  {'ratio':>6}")
    for i, (p, s) in enumerate(zip(plain, service, strict=True), 1):
        print(f"{i:>5}  {p.seconds:>8.2f}  {s.seconds:>9.2f}  {s.seconds / p.seconds:>6.3f}")
    plain_med = statistics.median(t.seconds for t in plain)
    service_med = statistics.median(t.seconds for t in service)
    ratio = service_med / plain_med
    overhead = (ratio - 1.0) * 100.0
    print(f"{'median':>5}  {plain_med:>8.2f}  {service_med:>9.2f}  {ratio:>6.3f}")
    print()
    print(f"ratio service/plain (medians): {ratio:.3f}  overhead: {overhead:+.1f}%")
    paired = statistics.median(s.seconds / p.seconds for p, s in zip(plain, service, strict=True))
    print(f"median of the per-round ratios: {paired:.3f}")
    spread = max(max(t.seconds for t in ts) / min(t.seconds for t in ts)
                 for ts in (plain, service))
    if spread > 1.10:
        print(f"note: builds of one kind varied by up to {(spread - 1) * 100:.0f}% between "
              "rounds: the machine was busy; use more --rounds or a quiet machine")

    svc_steps = median_steps(service)
    plain_steps = median_steps(plain)
    print()
    print("median seconds per step")
    print(f"  {'service step':<12} {'service s':>9}   {'plain step':<10} {'plain s':>8}")
    for name, secs in svc_steps.items():
        counterpart = name if name in plain_steps else ""
        plain_s = f"{plain_steps[name]:>8.2f}" if counterpart else f"{'-':>8}"
        print(f"  {name:<12} {secs:>9.2f}   {counterpart or '-':<10} {plain_s}")
    unaccounted = service_med - sum(svc_steps.values())
    print(f"  {'(outside)':<12} {unaccounted:>9.2f}   queueing, polling, log storage, "
          "clean-up, final state")
    print()
    verdict = "MET" if overhead < 10.0 else "NOT MET"
    print(f"target: under 10% overhead — {verdict}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3,
                        help="measured rounds after the warm-up (default 3)")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")

    scratch = Path(tempfile.mkdtemp(prefix="clusterforge-bench-"))
    data_dir = scratch / "data"
    data_dir.mkdir()
    service = Service(data_dir)
    patches = series_patches()
    apt_conf = data_dir / "apt" / socket.gethostname() / "apt.conf"  # per worker host
    plain: list[Timing] = []
    served: list[Timing] = []
    failed = False
    try:
        print(f"starting clusterforge run on port {service.port} (data in {data_dir}); "
              f"load average {os.getloadavg()[0]:.2f} ({os.cpu_count()} CPUs)", flush=True)
        service.start()
        with httpx.Client(timeout=30.0) as client:
            print("warm-up: service build ...", end=" ", flush=True)
            print(f"{service.build(client).seconds:.2f} s", flush=True)
            if not apt_conf.is_file():
                raise BenchError(f"the service wrote no {apt_conf}")
            print("warm-up: plain build ...", end=" ", flush=True)
            print(f"{plain_build(apt_conf, scratch, patches).seconds:.2f} s", flush=True)
            for i in range(1, args.rounds + 1):
                order = ("plain", "service") if i % 2 else ("service", "plain")
                for kind in order:
                    print(f"round {i}: {kind} build ...", end=" ", flush=True)
                    if kind == "plain":
                        t = plain_build(apt_conf, scratch, patches)
                        plain.append(t)
                    else:
                        t = service.build(client)
                        served.append(t)
                    print(f"{t.seconds:.2f} s", flush=True)
    except (BenchError, httpx.HTTPError) as exc:
        print(f"\nerror: {exc}", file=sys.stderr)
        failed = True
    finally:
        service.stop()
    if not failed:
        print(f"load average at the end: {os.getloadavg()[0]:.2f} ({os.cpu_count()} CPUs)")
        report(plain, served)
        shutil.rmtree(scratch, ignore_errors=True)
    else:
        print(f"kept {scratch} for inspection", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
