"""Comet: a message streaming broker in the Kafka model."""

__version__ = "0.1.0"
