"""clusterforge-agent: runs on each node (or against a chroot with --root). Registers,
heartbeats, long-polls for jobs, writes managed files before any package is
installed, installs with apt, and reports per-package results.

Its only third-party dependency is httpx; everything else is the standard library and
Debian's own tools (dpkg, apt-get) on the node."""
