"""Command-line entry points: `comet` (the broker) and `cometctl` (the tool)."""
