"""TopicProducer (synchronous): the asyncio producer driven from any thread.

send() frames the record in the calling thread (the accumulator is
thread-safe) and returns at once with a DeliveryHandle; requests run on the
client's background loop.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from types import TracebackType
from typing import Any

from comet import aio
from comet.aio.config import ProducerConfig
from comet.aio.delivery import DeliveryCallback, DeliveryHandle, DeliveryHandles, RecordMetadata
from comet.client.loop_thread import LoopThread, shared_loop
from comet.errors import ClientClosedError
from comet.records.builder import Headers


class TopicProducer:
    """Produces to one topic from synchronous code; a context manager that flushes on exit."""

    def __init__(self, config: ProducerConfig, *, loop: LoopThread | None = None) -> None:
        self._loop = loop or shared_loop()
        self._producer = aio.TopicProducer(config)
        self._loop.run(self._producer.start())
        self._acc = self._producer._accumulator()
        self._send_timeout = config.send_timeout
        self._closed = False

    @property
    def config(self) -> ProducerConfig:
        """The configuration in force."""
        return self._producer.config

    @property
    def partitions(self) -> int:
        """Partition count of the topic as last seen in metadata."""
        return self._producer.partitions

    def send(
        self,
        key: Any,
        value: Any,
        headers: Headers | None = None,
        partition: int | None = None,
        on_delivery: DeliveryCallback | None = None,
    ) -> DeliveryHandle:
        """Buffer one record (waiting up to send_timeout for room) and return its handle."""
        if self._closed:
            raise ClientClosedError("send() after close(): the producer is closed")
        k, v = self._producer._serialize(key, value)
        handle = self._acc.append(k, v, headers or (), partition, self._send_timeout)
        if on_delivery is not None:
            handle.add_done_callback(on_delivery)
        return handle

    def send_batch(
        self, records: Iterable[tuple[Any, Any]], partition: int | None = None
    ) -> DeliveryHandles:
        """Send many (key, value) records; their handles in order (made when looked at).

        Blocks up to send_timeout for room while the buffer is full.
        """
        if self._closed:
            raise ClientClosedError("send() after close(): the producer is closed")
        cfg = self._producer.config
        if cfg.key_serializer is not None or cfg.value_serializer is not None:
            records = [self._producer._serialize(k, v) for k, v in records]
        elif not isinstance(records, Sequence):
            records = list(records)
        handles = DeliveryHandles()
        self._acc.append_many(records, 0, partition, self._send_timeout, handles)
        return handles

    def send_and_wait(
        self, key: Any, value: Any, timeout: float | None = None, **kwargs: Any
    ) -> RecordMetadata:
        """Send one record and block until it is acknowledged."""
        return self.send(key, value, **kwargs).result(timeout)

    def flush(self, timeout: float | None = None) -> None:
        """Send everything buffered and wait for every acknowledgement."""
        self._loop.run(self._producer.flush(), timeout)

    def close(self) -> None:
        """Flush and release the producer; idempotent."""
        if self._closed:
            return
        self._closed = True
        self._loop.run(self._producer.close())

    def __enter__(self) -> TopicProducer:
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
