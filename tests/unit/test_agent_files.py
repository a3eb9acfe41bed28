"""The agent's managed files: written atomically, the previous version kept, and an
existing file's mode kept (a 0600 cluster.conf with fence passwords stays 0600)."""

from __future__ import annotations

from pathlib import Path

from agent.system import System


def test_managed_files_keep_previous_version_and_mode(tmp_path: Path) -> None:
    node = System(tmp_path)
    conf = tmp_path / "etc/cluster/cluster.conf"
    assert node.write_atomically("/etc/cluster/cluster.conf", b"v1")
    assert conf.read_bytes() == b"v1" and conf.stat().st_mode & 0o777 == 0o644
    conf.chmod(0o600)
    assert node.write_atomically("/etc/cluster/cluster.conf", b"v2")
    assert conf.read_bytes() == b"v2" and conf.stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "etc/cluster/cluster.conf.cf-previous").read_bytes() == b"v1"
    assert not node.write_atomically("/etc/cluster/cluster.conf", b"v2")  # unchanged
    assert [p.name for p in conf.parent.iterdir() if "cf-tmp" in p.name] == []


def test_a_managed_file_is_narrowed_to_the_plans_mode_never_widened(tmp_path: Path) -> None:
    node = System(tmp_path)
    conf = tmp_path / "etc/cluster/cluster.conf"
    assert node.write_atomically("/etc/cluster/cluster.conf", b"v1")  # an older agent's
    assert conf.stat().st_mode & 0o777 == 0o644
    # The same content, now planned 0640 (fence passwords): narrowed, nothing kept aside.
    assert node.write_atomically("/etc/cluster/cluster.conf", b"v1", mode=0o640)
    assert conf.stat().st_mode & 0o777 == 0o640
    assert not (tmp_path / "etc/cluster/cluster.conf.cf-previous").exists()
    conf.chmod(0o600)  # the administrator's choice stays
    assert not node.write_atomically("/etc/cluster/cluster.conf", b"v1", mode=0o640)
    assert conf.stat().st_mode & 0o777 == 0o600
    # A secret is exactly its mode, whatever was there.
    auth = tmp_path / "etc/apt/auth.conf.d/x.conf"
    auth.parent.mkdir(parents=True)
    auth.write_bytes(b"old")
    auth.chmod(0o644)
    assert node.write_atomically("/etc/apt/auth.conf.d/x.conf", b"new", mode=0o600,
                                 keep_mode=False, keep_previous=False)
    assert auth.stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in auth.parent.iterdir()) == ["x.conf"]
