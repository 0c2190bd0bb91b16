"""A consumer process for the kill -9 test: prints each handled record as `partition offset`."""

from __future__ import annotations

import sys

from comet.client import Consumer, ConsumerConfig


def main() -> None:
    """Consume argv[2] in group argv[3] from the broker at argv[1] until killed."""
    address, topic, group = sys.argv[1:4]
    config = ConsumerConfig(address, group=group, session_timeout=2.0, auto_commit_every=10)
    consumer = Consumer(config)
    for message in consumer.messages(topic):
        print(message.partition, message.offset, flush=True)


if __name__ == "__main__":
    main()
