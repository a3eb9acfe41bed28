"""Benchmark: 50 clients downloading one 50 MB .deb from the apt tree, against nginx.

Why: nodes fetch packages from the service's /apt/<repo>/pool/... URLs. During a
rollout many nodes fetch the same large .deb at once, so the service has to stream it
about as well as a plain web server would, and without holding the file in memory.
Issue 3's benchmark (c) compares the service with nginx serving the same file on
loopback and reports the ratio.

What it does, in one run:
  * builds a .deb with dpkg-deb (-Znone) around a random, incompressible payload of
    --size-mb megabytes (10^6 bytes);
  * starts the real service as a user would (`clusterforge run`: uvicorn API + arq
    worker + a private redis-server) with a temporary data directory, a free port and
    a random admin token; stores the .deb with the service's own store_deb, creates a
    repository and publishes the artifact through the HTTP API, and takes the pool URL
    from the publication's packages;
  * starts nginx in the foreground with a private configuration in the temporary
    directory (sendfile on; worker_processes auto, as Debian's stock config), serving
    the blob file at the same URL path;
  * downloads the file once from each server into a file and checks its sha256 (this
    also warms the page cache), then runs N rounds, each a batch of --clients
    concurrent `curl` processes per server (alternating which server goes first), and
    checks every download answered 200 with the full size;
  * prints per round and per server the batch wall time, the aggregate throughput, the
    per-client p50/p95 times, the ratio service/nginx, the CPU time of each server and
    of the curl clients, and the RSS of the service's API process (sampled during the
    load) to show the file is streamed and not read into memory.

It exits 0 whatever the figures (a benchmark reports figures; it does not assert), 1
when the service did not start or a download failed, 2 when nginx is not installed.

Run: .venv/bin/python bench/apt_download.py [--rounds N] [--clients N] [--size-mb N]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import math
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from service import STOP_GRACE, BenchError, BenchService, free_port

REPO = "bench"
SUITE = "bookworm"
PACKAGE = "cf-bench-payload"
CURL_MAX_TIME = 600
SAMPLE_INTERVAL = 0.02
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = 1 << 20




class NoNginx(BenchError):
    pass




def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(PAGE), b""):
            digest.update(chunk)
    return digest.hexdigest()


# ------------------------------------------------------------------------------ /proc


def _children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            stat = (entry / "stat").read_text()
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(entry.name))
    return out


def process_tree(pid: int) -> list[int]:
    """pid and all its descendants."""
    pids, todo = [], [pid]
    while todo:
        p = todo.pop()
        pids.append(p)
        todo += _children(p)
    return pids


def cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def status_kib(pid: int, key: str) -> int:
    """A `VmRSS:`/`VmHWM:` line of /proc/<pid>/status, in KiB (0 if it is gone)."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def cpu_seconds(pids: list[int]) -> float:
    """utime + stime of the processes (their reaped children are not counted)."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
    return total / CLK_TCK


def children_cpu_seconds() -> float:
    """CPU time of this process's reaped children: the curl clients."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


# --------------------------------------------------------------------------- service


class Service(BenchService):
    """The service, plus what this benchmark asks of it."""

    def api_pids(self) -> list[int]:
        """The uvicorn process that `clusterforge run` started, and any children of it
        (uvicorn's own workers when it runs more than one)."""
        assert self.proc is not None
        for pid in _children(self.proc.pid):
            argv = cmdline(pid)
            if argv and any(Path(a).name == "uvicorn" for a in argv[:2]):
                return process_tree(pid)
        raise BenchError("no uvicorn process among the children of clusterforge run")

    def uvicorn_workers(self, pids: list[int]) -> str:
        argv = cmdline(pids[0])
        if "--workers" in argv:
            return argv[argv.index("--workers") + 1]
        return "1 (no --workers: a single process, one event loop)"

    def publish(self, artifact_id: int) -> tuple[str, str, int]:
        """Create the repository, publish the artifact; (pool URL path, sha256, size)."""
        headers = {"Authorization": f"Bearer {self.token}"}
        api = f"{self.base}/api/v1"
        with httpx.Client(timeout=90.0, headers=headers, trust_env=False) as client:
            r = client.post(f"{api}/repositories", json={
                "name": REPO, "suites": [SUITE], "architectures": ["amd64"]})
            if r.status_code != 201:
                raise BenchError(f"POST /repositories answered {r.status_code}: {r.text[:500]}")
            r = client.post(f"{api}/repositories/{REPO}/publish", params={"wait": 60},
                            json={"suite": SUITE, "artifacts": [artifact_id]})
            if r.status_code not in (200, 202):
                raise BenchError(f"POST /publish answered {r.status_code}: {r.text[:500]}")
            pub = r.json()
            if pub["status"] != "succeeded":
                raise BenchError(f"publication {pub['id']} is {pub['status']} after 60 s: "
                                 f"{pub.get('error')} (see {self.log_path})")
            r = client.get(f"{api}/repositories/{REPO}/publications/{pub['id']}/packages")
            r.raise_for_status()
            [item] = r.json()["items"]
        return f"/apt/{REPO}/{item['pool_path']}", item["sha256"], int(item["size"])


def make_deb(out_dir: Path, size_bytes: int) -> Path:
    """A binary package around an incompressible payload, not compressed (-Znone), so
    the .deb is as large as the payload."""
    tree = out_dir / "deb-tree"
    (tree / "DEBIAN").mkdir(parents=True)
    (tree / "DEBIAN" / "control").write_text("\n".join([
        f"Package: {PACKAGE}", "Version: 1.0", "Architecture: all",
        "Maintainer: ClusterForge Bench <bench@localhost>", "Section: misc",
        "Priority: optional", "Description: ClusterForge download benchmark payload",
        " Random bytes, for bench/apt_download.py.", ""]))
    share = tree / "usr" / "share" / PACKAGE
    share.mkdir(parents=True)
    with (share / "payload.bin").open("wb") as fh:
        left = size_bytes
        while left > 0:
            n = min(left, PAGE)
            fh.write(os.urandom(n))
            left -= n
    deb = out_dir / f"{PACKAGE}_1.0_all.deb"
    subprocess.run(["dpkg-deb", "--root-owner-group", "-Znone", "-b", str(tree), str(deb)],
                   check=True, capture_output=True)
    shutil.rmtree(tree)
    return deb


async def store_artifact(data_dir: Path, deb: Path) -> int:
    """Store the .deb as an artifact with the service's own code, in its database."""
    from app.blobs import BlobStore
    from app.db import make_engine, make_sessionmaker
    from app.services.artifact_import import store_deb
    from app.settings import Settings

    settings = Settings(data_dir=data_dir, database_url=None)
    engine = make_engine(settings.resolved_database_url)
    try:
        async with make_sessionmaker(engine)() as session:
            artifact = await store_deb(session, BlobStore(settings.resolved_data_dir / "blobs"),
                                       deb)
            await session.commit()
            return artifact.id
    finally:
        await engine.dispose()


# ----------------------------------------------------------------------------- nginx


def nginx_binary() -> str:
    found = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/sbin")
    if found is None:
        raise NoNginx("nginx is not installed: apt-get install -y nginx-light "
                      "(this benchmark runs its own nginx with a private config; "
                      "it does not use the system one)")
    return found


class Nginx:
    """nginx in the foreground (daemon off) with everything under one directory."""

    def __init__(self, directory: Path, url_path: str, blob: Path, avoid: set[int]) -> None:
        self.dir = directory
        self.port = free_port(avoid)
        self.base = f"http://127.0.0.1:{self.port}"
        self.url_path = url_path
        self.blob = blob
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = directory / "error.log"

    def config(self) -> str:
        d = self.dir
        return f"""daemon off;
master_process on;
worker_processes auto;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log {d}/access.log;
    client_body_temp_path {d}/tmp/body;
    proxy_temp_path {d}/tmp/proxy;
    fastcgi_temp_path {d}/tmp/fastcgi;
    uwsgi_temp_path {d}/tmp/uwsgi;
    scgi_temp_path {d}/tmp/scgi;
    sendfile on;
    tcp_nopush on;
    types {{ application/vnd.debian.binary-package deb; }}
    default_type application/octet-stream;
    server {{
        listen 127.0.0.1:{self.port};
        server_name localhost;
        location = {self.url_path} {{ alias {self.blob}; }}
        location / {{ return 404; }}
    }}
}}
"""

    def start(self) -> None:
        binary = nginx_binary()
        (self.dir / "tmp").mkdir(parents=True)
        conf = self.dir / "nginx.conf"
        conf.write_text(self.config())
        argv = [binary, "-p", f"{self.dir}/", "-c", str(conf), "-e", str(self.log_path)]
        check = subprocess.run([*argv, "-t", "-q"], capture_output=True, text=True, check=False)
        if check.returncode != 0:
            raise BenchError(f"nginx -t refused {conf}: {check.stderr.strip()[:500]}")
        with (self.dir / "stderr.log").open("wb") as log:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 10.0
        with httpx.Client(timeout=2.0, trust_env=False) as client:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise BenchError(f"nginx exited with {self.proc.returncode}; "
                                     f"see {self.log_path}")
                with contextlib.suppress(httpx.HTTPError):
                    r = client.head(self.base + self.url_path)
                    if r.status_code == 200:
                        return
                    raise BenchError(f"nginx answered {r.status_code} for {self.url_path}; "
                                     f"see {self.log_path}")
                time.sleep(0.1)
        raise BenchError(f"nginx did not answer in 10 s; see {self.log_path}")

    def stop(self) -> None:
        """SIGTERM: nginx's fast shutdown, for the master and its workers."""
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(STOP_GRACE)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def pids(self) -> list[int]:
        assert self.proc is not None
        return process_tree(self.proc.pid)


# ------------------------------------------------------------------------------ load


@dataclass
class Target:
    name: str
    url: str
    pids: list[int]


@dataclass
class Batch:
    wall: float
    client_times: list[float]
    server_cpu: float
    client_cpu: float
    peak_rss_kib: int = 0


@dataclass
class Results:
    batches: dict[str, list[Batch]] = field(default_factory=dict)


async def curl(url: str, output: str) -> tuple[int, int, float]:
    proc = await asyncio.create_subprocess_exec(
        "curl", "-s", "--noproxy", "*", "--max-time", str(CURL_MAX_TIME), "-o", output,
        "-w", "%{http_code} %{size_download} %{time_total}\n", url,
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL)
    out, _ = await proc.communicate()
    try:
        code, size, seconds = out.decode().split()
        return int(code), int(size), float(seconds)
    except ValueError:
        return 0, 0, 0.0


async def sample_rss(pids: list[int], stop: asyncio.Event) -> int:
    """The highest sum of VmRSS over pids seen while the batch ran, in KiB."""
    peak = 0
    while not stop.is_set():
        peak = max(peak, sum(status_kib(p, "VmRSS") for p in pids))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), SAMPLE_INTERVAL)
    return peak


async def batch(target: Target, clients: int, size: int, sample: bool) -> Batch:
    stop = asyncio.Event()
    sampler = asyncio.create_task(sample_rss(target.pids, stop)) if sample else None
    cpu0, ccpu0 = cpu_seconds(target.pids), children_cpu_seconds()
    started = time.monotonic()
    results = await asyncio.gather(*(curl(target.url, os.devnull) for _ in range(clients)))
    wall = time.monotonic() - started
    cpu1, ccpu1 = cpu_seconds(target.pids), children_cpu_seconds()
    stop.set()
    peak = await sampler if sampler else 0
    bad = [(code, got) for code, got, _ in results if code != 200 or got != size]
    if bad:
        raise BenchError(f"{target.name}: {len(bad)} of {clients} downloads failed "
                         f"(http code, bytes): {bad[:5]}, expected (200, {size})")
    return Batch(wall, [s for _, _, s in results], cpu1 - cpu0, ccpu1 - ccpu0, peak)


async def verify(target: Target, scratch: Path, sha256: str, size: int) -> None:
    dest = scratch / f"check-{target.name}.deb"
    code, got, seconds = await curl(target.url, str(dest))
    if code != 200 or got != size:
        raise BenchError(f"{target.name}: GET {target.url} gave {code} with {got} bytes, "
                         f"expected 200 with {size}")
    actual = await asyncio.to_thread(sha256_of, dest)
    dest.unlink()
    if actual != sha256:
        raise BenchError(f"{target.name}: sha256 of the download is {actual}, the blob's "
                         f"is {sha256}")
    print(f"  {target.name}: one download, sha256 matches the blob ({seconds:.2f} s)",
          flush=True)


async def run_load(targets: dict[str, Target], scratch: Path, sha256: str, size: int,
                   rounds: int, clients: int) -> Results:
    print("check: one download from each server into a file", flush=True)
    for target in targets.values():
        await verify(target, scratch, sha256, size)
    results = Results({name: [] for name in targets})
    names = list(targets)
    for i in range(1, rounds + 1):
        order = names if i % 2 else names[::-1]
        for name in order:
            print(f"round {i}: {clients} clients against {name} ...", end=" ", flush=True)
            b = await batch(targets[name], clients, size, sample=name == "service")
            results.batches[name].append(b)
            print(f"{b.wall:.2f} s", flush=True)
    return results


# ---------------------------------------------------------------------------- report


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(q / 100 * len(ordered))))
    return ordered[rank - 1]


def report(results: Results, clients: int, size: int, idle_rss: int, hwm: int) -> None:
    svc, ngx = results.batches["service"], results.batches["nginx"]
    total_mb = clients * size / 1e6
    print()
    print(f"{'round':>5}  {'service s':>9}  {'nginx s':>8}  {'ratio':>6}")
    for i, (s, n) in enumerate(zip(svc, ngx, strict=True), 1):
        print(f"{i:>5}  {s.wall:>9.2f}  {n.wall:>8.2f}  {s.wall / n.wall:>6.2f}")
    print()
    print(f"{clients} concurrent downloads of {size / 1e6:.1f} MB = {total_mb:.0f} MB per batch")
    print(f"{'server':<8} {'wall s':>7} {'MB/s':>7} {'p50 s':>7} {'p95 s':>7} "
          f"{'server CPU s':>12} {'curl CPU s':>10}")
    medians: dict[str, float] = {}
    for name, batches in (("service", svc), ("nginx", ngx)):
        wall = statistics.median(b.wall for b in batches)
        medians[name] = wall
        times = [t for b in batches for t in b.client_times]
        print(f"{name:<8} {wall:>7.2f} {total_mb / wall:>7.0f} {percentile(times, 50):>7.2f} "
              f"{percentile(times, 95):>7.2f} "
              f"{statistics.median(b.server_cpu for b in batches):>12.2f} "
              f"{statistics.median(b.client_cpu for b in batches):>10.2f}")
    ratio = medians["service"] / medians["nginx"]
    print("(wall: median over rounds; MB/s: all bytes of a batch / median wall; p50/p95: "
          "curl's time_total over every download; CPU: median per batch)")
    print()
    print(f"ratio service/nginx (median wall): {ratio:.2f}  "
          f"(the service delivers {1 / ratio:.0%} of nginx's throughput)")
    paired = statistics.median(s.wall / n.wall for s, n in zip(svc, ngx, strict=True))
    print(f"median of the per-round ratios: {paired:.2f}")
    peak = max(b.peak_rss_kib for b in svc)
    print()
    print(f"API process RSS: {idle_rss / 1024:.0f} MiB idle before the load, "
          f"{peak / 1024:.0f} MiB peak while serving (sampled every "
          f"{SAMPLE_INTERVAL * 1000:.0f} ms), VmHWM {hwm / 1024:.0f} MiB; "
          f"the file is {size / 2**20:.0f} MiB and {clients} clients read it at once")


# ------------------------------------------------------------------------------ main


def print_tail(log: Path, lines: int = 20) -> None:
    """The end of a log, to stderr: the temporary directory is removed on the way out."""
    with contextlib.suppress(OSError):
        text = log.read_text(errors="replace").splitlines()[-lines:]
        if text:
            print(f"--- last lines of {log.name}:", *text, sep="\n", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3,
                        help="measured rounds per server (default 3)")
    parser.add_argument("--clients", type=int, default=50,
                        help="concurrent downloads per batch (default 50)")
    parser.add_argument("--size-mb", type=float, default=50.0,
                        help="payload size of the .deb in MB of 10^6 bytes (default 50)")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.clients < 1 or args.size_mb <= 0:
        parser.error("--rounds, --clients and --size-mb must be positive")
    if shutil.which("curl") is None:
        print("error: curl is not installed (apt-get install -y curl)", file=sys.stderr)
        return 2
    try:
        nginx_binary()
    except NoNginx as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    scratch = Path(tempfile.mkdtemp(prefix="clusterforge-bench-"))
    scratch.chmod(0o755)  # nginx's workers (user nobody when run as root) read the blob
    data_dir = scratch / "data"
    data_dir.mkdir()
    service = Service(data_dir, set())
    nginx: Nginx | None = None
    failed = False
    try:
        print(f"load average {os.getloadavg()[0]:.2f} ({os.cpu_count()} CPUs); "
              f"scratch {scratch}", flush=True)
        print(f"building a .deb with {args.size_mb:g} MB of random payload ...", end=" ",
              flush=True)
        deb = make_deb(scratch, int(args.size_mb * 1e6))
        print(f"{deb.stat().st_size} bytes", flush=True)
        print(f"starting clusterforge run on port {service.port} ...", end=" ", flush=True)
        service.start()
        api = service.api_pids()
        print(f"API pid {api[0]}, uvicorn workers: {service.uvicorn_workers(api)}", flush=True)
        artifact_id = asyncio.run(store_artifact(data_dir, deb))
        url_path, sha256, size = service.publish(artifact_id)
        deb.unlink()
        blob = data_dir / "blobs" / "sha256" / sha256[:2] / sha256[2:]
        print(f"published artifact {artifact_id} at {url_path} ({size} bytes)")
        print(f"blob {blob}")
        nginx = Nginx(scratch / "nginx", url_path, blob, {service.port})
        nginx.start()
        print(f"nginx on port {nginx.port}: pids {nginx.pids()} (master + workers)",
              flush=True)
        targets = {"service": Target("service", service.base + url_path, api),
                   "nginx": Target("nginx", nginx.base + url_path, nginx.pids())}
        idle_rss = sum(status_kib(p, "VmRSS") for p in api)
        results = asyncio.run(run_load(targets, scratch, sha256, size, args.rounds,
                                       args.clients))
        hwm = sum(status_kib(p, "VmHWM") for p in api)
    except (BenchError, httpx.HTTPError, subprocess.CalledProcessError) as exc:
        print(f"\nerror: {exc}", file=sys.stderr)
        for log in (service.log_path, scratch / "nginx" / "error.log"):
            print_tail(log)
        failed = True
    finally:
        if nginx is not None:
            nginx.stop()
        service.stop()
        shutil.rmtree(scratch, ignore_errors=True)
    if failed:
        return 1
    print(f"load average at the end: {os.getloadavg()[0]:.2f} ({os.cpu_count()} CPUs)")
    report(results, args.clients, size, idle_rss, hwm)
    return 0

if __name__ == "__main__":
    raise SystemExit(main())
