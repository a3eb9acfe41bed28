"""Real apt, in a Debian minbase chroot, against the service on loopback: signature
checking on (the key in Signed-By, never trusted=yes), installs, concurrent updates
during publications, tampering, a foreign key, rollback and read protection."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import lzma
import os
import shutil
import subprocess
import tempfile

import httpx
import pytest

from tests.chroot import Chroot
from tests.debfixtures import make_binary_deb, make_native_source
from tests.integration.helpers import create_repository, publish, store_debs, upload_parts

pytestmark = pytest.mark.slow


def _host_arch() -> str:
    return subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True,
                          check=True).stdout.strip()


async def _install_sources_entry(chroot: Chroot, server: str, repo: str,
                                 suite: str = "bookworm") -> str:
    """What the README tells an administrator to do: fetch the .sources entry and the
    key it names, and drop both where the entry says."""
    async with httpx.AsyncClient() as http:
        entry = (await http.get(f"{server}/apt/{repo}/sources/{suite}")).text
        key = (await http.get(f"{server}/apt/{repo}/key.asc")).content
    assert "trusted" not in entry
    keyring = next(line.split(": ", 1)[1] for line in entry.splitlines()
                   if line.startswith("Signed-By: "))
    (chroot.dest / keyring.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
    (chroot.dest / keyring.lstrip("/")).write_bytes(key)
    (chroot.dest / f"etc/apt/sources.list.d/clusterforge-{repo}.sources").write_text(entry)
    return entry


def _fresh_lists(chroot: Chroot) -> None:
    """Forget what apt downloaded, so the next update fetches everything again."""
    lists = chroot.dest / "var/lib/apt/lists"
    for entry in [*lists.iterdir(), *(lists / "partial").iterdir()]:
        if entry.is_file():
            entry.unlink()


async def _candidate(chroot: Chroot, package: str) -> str:
    rc, out = await chroot.run("apt-cache", "policy", package)
    assert rc == 0, out
    return next(line.split(":", 1)[1].strip() for line in out.splitlines()
                if line.strip().startswith("Candidate:"))


async def test_apt_installs_a_built_package_with_signature_checking(
    client, live_server, run_worker, chroot, fixtures_dir
):
    dsc = make_native_source(fixtures_dir, "cf-node-tool", "1.0")
    build = (await client.post("/api/v1/builds", files=upload_parts(dsc))).json()
    await run_worker()
    await create_repository(client, "cluster", architectures=[_host_arch()])
    await publish(client, run_worker, "cluster", {"suite": "bookworm",
                                                  "builds": [build["id"]]})
    entry = await _install_sources_entry(chroot, live_server, "cluster")
    assert f"URIs: {live_server}/apt/cluster" in entry

    rc, out = await chroot.apt_get("update")
    assert rc == 0, out
    assert "W:" not in out and "E:" not in out, out
    rc, out = await chroot.apt_get("install", "cf-node-tool")
    assert rc == 0, out
    assert await chroot.installed_version("cf-node-tool") == "1.0+cf1"
    assert (chroot.dest / "usr/share/cf-node-tool/hello.txt").read_text() == \
        "hello from cf-node-tool 1.0\n"


async def test_publishing_while_apt_updates_never_gives_a_hash_mismatch(
    app, client, live_server, run_worker, chroot, fixtures_dir
):
    versions = [f"1.{i}" for i in range(8)]
    ids = await store_debs(app, [
        make_binary_deb(fixtures_dir, "cf-churn", v, payload=os.urandom(2000))
        for v in versions])
    filler = await store_debs(app, [make_binary_deb(fixtures_dir, f"cf-filler{i}", "1.0")
                                    for i in range(30)])
    await create_repository(client, "cluster", architectures=[_host_arch()])
    await publish(client, run_worker, "cluster",
                  {"suite": "bookworm", "artifacts": [ids[0], *filler]})
    await _install_sources_entry(chroot, live_server, "cluster")

    stop = asyncio.Event()
    results: list[tuple[int, str]] = []

    async def apt_loop() -> None:
        while not stop.is_set():
            _fresh_lists(chroot)
            results.append(await chroot.apt_get("update"))

    loop = asyncio.create_task(apt_loop())
    try:
        for artifact in ids[1:]:
            await publish(client, run_worker, "cluster",
                          {"suite": "bookworm", "artifacts": [artifact]})
            await asyncio.sleep(0.05)
        while len(results) < 10:
            await asyncio.sleep(0.1)
    finally:
        stop.set()
        await loop
    failures = [out for rc, out in results if rc != 0 or "Hash Sum mismatch" in out
                or "unexpected size" in out]
    assert failures == [], failures[0]
    assert len(results) >= 10
    assert (await chroot.apt_get("update"))[0] == 0  # the loop may end before the last switch
    rc, out = await chroot.apt_get("install", "cf-churn")
    assert rc == 0, out
    assert await chroot.installed_version("cf-churn") == versions[-1]


async def test_tampered_indexes_and_a_foreign_key_are_refused_by_apt(
    app, client, live_server, run_worker, chroot, fixtures_dir
):
    [art] = await store_debs(app, [make_binary_deb(fixtures_dir, "cf-signed", "1.0")])
    await create_repository(client, "cluster", architectures=[_host_arch()])
    await publish(client, run_worker, "cluster", {"suite": "bookworm", "artifacts": [art]})
    await _install_sources_entry(chroot, live_server, "cluster")
    rc, out = await chroot.apt_get("update")
    assert rc == 0, out
    blobs = app.state.blobs

    async def served(path: str) -> bytes:
        async with httpx.AsyncClient() as http:
            return (await http.get(f"{live_server}/apt/cluster/dists/bookworm/{path}")).content

    async def tampered(path: str, edit) -> tuple[int, str]:
        """Change a stored file after signing, run a fresh apt-get update, restore."""
        original = await served(path)
        blob = blobs.path(hashlib.sha256(original).hexdigest())
        blob.chmod(0o644)
        blob.write_bytes(edit(original))
        try:
            _fresh_lists(chroot)
            return await chroot.apt_get("update")
        finally:
            blob.write_bytes(original)

    # InRelease whose signed text was changed: the signature no longer matches.
    rc, out = await tampered("InRelease",
                             lambda d: d.replace(b"Label: cluster", b"Label: clustex"))
    assert rc != 0, out
    assert "BADSIG" in out or "signatures were invalid" in out, out
    _fresh_lists(chroot)
    rc, out = await chroot.apt_get("update")
    assert rc == 0, out
    # A Packages index changed after signing: its checksum no longer matches Release.
    packages = [f"main/binary-{_host_arch()}/Packages{ext}" for ext in ("", ".gz", ".xz")]
    originals = {p: await served(p) for p in packages}
    fake = originals[packages[0]].replace(b"Version: 1.0", b"Version: 9.9")
    forged = {packages[0]: fake, packages[1]: gzip.compress(fake),
              packages[2]: lzma.compress(fake)}
    for p in packages:
        blobs.path(hashlib.sha256(originals[p]).hexdigest()).write_bytes(forged[p])
    try:
        _fresh_lists(chroot)
        rc, out = await chroot.apt_get("update")
    finally:
        for p in packages:
            blobs.path(hashlib.sha256(originals[p]).hexdigest()).write_bytes(originals[p])
    assert rc != 0, out
    assert "Hash Sum mismatch" in out or "unexpected size" in out, out
    rc, policy = await chroot.run("apt-cache", "policy", "cf-signed")
    assert "9.9" not in policy  # the forged index was never used

    # Restored, the repository verifies again...
    _fresh_lists(chroot)
    rc, out = await chroot.apt_get("update")
    assert rc == 0, out
    # ...but not for a client that trusts a different key.
    home = tempfile.mkdtemp(prefix="cfk-")
    try:
        gen = await asyncio.create_subprocess_exec(
            "gpg", "--homedir", home, "--batch", "--pinentry-mode", "loopback",
            "--passphrase", "", "--quick-gen-key", "Someone Else <other@example.invalid>",
            "ed25519", "sign", "never", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        assert await gen.wait() == 0
        export = await asyncio.create_subprocess_exec(
            "gpg", "--homedir", home, "--export", stdout=subprocess.PIPE)
        other_key, _ = await export.communicate()
    finally:
        kill = await asyncio.create_subprocess_exec("gpgconf", "--homedir", home, "--kill",
                                                    "gpg-agent")
        await kill.wait()
        shutil.rmtree(home, ignore_errors=True)
    for leftover in (chroot.dest / "etc/apt/sources.list.d").iterdir():
        leftover.unlink()
    chroot.configure_repository("other", f"{live_server}/apt/cluster", ["bookworm"],
                                ["main"], other_key)
    _fresh_lists(chroot)
    rc, out = await chroot.apt_get("update")
    assert rc != 0, out
    assert "NO_PUBKEY" in out, out


async def test_rollback_makes_apt_see_the_earlier_version_again(
    app, client, live_server, run_worker, chroot, fixtures_dir
):
    v1, v2 = await store_debs(app, [make_binary_deb(fixtures_dir, "cf-roll", "1.0"),
                                    make_binary_deb(fixtures_dir, "cf-roll", "2.0")])
    await create_repository(client, "cluster", architectures=[_host_arch()])
    first = await publish(client, run_worker, "cluster",
                          {"suite": "bookworm", "artifacts": [v1]})
    await _install_sources_entry(chroot, live_server, "cluster")
    assert (await chroot.apt_get("update"))[0] == 0
    assert await _candidate(chroot, "cf-roll") == "1.0"
    await publish(client, run_worker, "cluster", {"suite": "bookworm", "artifacts": [v2]})
    assert (await chroot.apt_get("update"))[0] == 0
    assert await _candidate(chroot, "cf-roll") == "2.0"
    assert (await chroot.apt_get("install", "cf-roll"))[0] == 0  # the node upgraded
    await publish(client, run_worker, "cluster",
                  {"suite": "bookworm", "publication": first["id"]})
    rc, out = await chroot.apt_get("update")
    assert rc == 0, out
    rc, policy = await chroot.run("apt-cache", "policy", "cf-roll")
    assert "1.0 500" in policy and "2.0 500" not in policy, policy  # the repo offers 1.0 only
    # apt never downgrades by itself (README, "Rollback")...
    rc, out = await chroot.apt_get("install", "cf-roll")
    assert rc == 0 and await chroot.installed_version("cf-roll") == "2.0", out
    # ...unless the repository is pinned above 1000, as the README shows.
    (chroot.dest / "etc/apt/preferences.d/clusterforge").write_text(
        "Package: *\nPin: release o=ClusterForge,l=cluster\nPin-Priority: 1001\n")
    assert await _candidate(chroot, "cf-roll") == "1.0"
    rc, out = await chroot.apt_get("upgrade", "--allow-downgrades")
    assert rc == 0, out
    assert await chroot.installed_version("cf-roll") == "1.0"


async def test_read_protected_repository_works_with_auth_conf_only(
    app, client, live_server, run_worker, chroot, fixtures_dir
):
    [art] = await store_debs(app, [make_binary_deb(fixtures_dir, "cf-private", "1.0")])
    await create_repository(client, "private", architectures=[_host_arch()],
                            read_protected=True)
    await publish(client, run_worker, "private", {"suite": "bookworm", "artifacts": [art]})
    await _install_sources_entry(chroot, live_server, "private")
    rc, out = await chroot.apt_get("update")
    assert rc != 0 and "401" in out, out

    async with httpx.AsyncClient(base_url=live_server,
                                 headers=client.headers) as admin:
        cred = (await admin.post("/api/v1/repositories/private/credentials",
                                 json={"username": "node1"})).json()
    auth = chroot.dest / "etc/apt/auth.conf.d/clusterforge-private.conf"
    auth.write_text(cred["auth_conf"])
    auth.chmod(0o600)
    _fresh_lists(chroot)
    rc, out = await chroot.apt_get("update")
    assert rc == 0, out
    rc, out = await chroot.apt_get("install", "cf-private")
    assert rc == 0, out
    assert await chroot.installed_version("cf-private") == "1.0"
