"""Building RecordBatch v2 bytes on the client, through aiokafka's C builder."""

from __future__ import annotations

import enum
import time
from collections.abc import Callable, Iterable, Sequence

from aiokafka.record.default_records import DefaultRecordBatchBuilder

Headers = Sequence[tuple[str, bytes | None]]

DEFAULT_MAX_BATCH_BYTES = 1024 * 1024


class Compression(enum.IntEnum):
    """Compression codecs of the RecordBatch attributes field."""

    NONE = 0
    GZIP = 1
    SNAPPY = 2
    LZ4 = 3
    ZSTD = 4

    @classmethod
    def parse(cls, value: str | int | None) -> Compression:
        """Map a config value (None, "zstd", "lz4", ...) to a codec; ValueError if unknown."""
        if value is None:
            return cls.NONE
        if isinstance(value, int):
            return cls(value)
        try:
            return cls[value.upper()]
        except KeyError:
            names = ", ".join(c.name.lower() for c in cls)
            raise ValueError(f"compression must be one of {names} or None, not {value!r}") from None


class RecordBatchBuilder:
    """Accumulates records into one batch; `append` returns False when it is full.

    Offsets inside the batch are deltas from 0; the broker stamps the base
    offset. Timestamps are milliseconds since the epoch.
    """

    __slots__ = ("_builder", "_count", "_max_bytes")

    def __init__(
        self,
        compression: Compression = Compression.NONE,
        max_bytes: int = DEFAULT_MAX_BATCH_BYTES,
        producer_id: int = -1,
        producer_epoch: int = -1,
        base_sequence: int = -1,
    ) -> None:
        self._builder = DefaultRecordBatchBuilder(
            2, int(compression), 0, producer_id, producer_epoch, base_sequence, max_bytes
        )
        self._count = 0
        self._max_bytes = max_bytes

    def append(
        self,
        key: bytes | None,
        value: bytes | None,
        timestamp_ms: int | None = None,
        headers: Headers = (),
    ) -> bool:
        """Add one record; False (nothing added) when the batch has no room left.

        The first record is always accepted, even when it alone is larger than
        max_bytes.
        """
        meta = self._builder.append(
            self._count, timestamp_ms, key, value, list(headers) if headers else []
        )
        if meta is None:
            return False
        self._count += 1
        return True

    @property
    def raw_append(self) -> Callable[..., object]:
        """The C builder's append(offset_delta, ts_ms, key, value, headers list): None when full.

        For hot loops that track the offset delta themselves; bypasses the
        record count of this wrapper.
        """
        return self._builder.append

    def __len__(self) -> int:
        return self._count

    def size_in_bytes(self) -> int:
        """Bytes the batch takes so far (before compression)."""
        return self._builder.size()

    def build(self) -> bytes:
        """Return the finished, checksummed batch."""
        return bytes(self._builder.build())


def encode_batch(
    records: Iterable[tuple[bytes | None, bytes | None]],
    *,
    compression: Compression = Compression.NONE,
    timestamp_ms: int | None = None,
) -> bytes:
    """Encode (key, value) pairs into one batch, however large."""
    ts = int(time.time() * 1000) if timestamp_ms is None else timestamp_ms
    builder = DefaultRecordBatchBuilder(2, int(compression), 0, -1, -1, -1, 1 << 62)
    append = builder.append
    for i, (key, value) in enumerate(records):
        append(i, ts, key, value, [])
    return bytes(builder.build())
