"""ClusterForge: builds, publishes, installs and proves a Debian HA cluster's software."""
