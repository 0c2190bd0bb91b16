"""The fault harness (issue #7): see docs/fault-testing.md; run with `python -m tests.faults`."""
