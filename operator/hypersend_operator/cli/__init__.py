"""Command-line tools that talk to a cluster running Hypersend (the `kubectl hypersend` plugin)."""
