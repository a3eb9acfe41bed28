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
