"""The storage engine: one partition's log on disk.

`PartitionLog` owns the segments of `{data_dir}/{topic}/{partition}/` and
appends, reads, rolls, retains and recovers them; `LogFlusher` shares
fsyncs among concurrent appends (group commit); `LogConfig` holds the
topic-level settings. The broker hands in batches already validated with
`comet.records.validate_batches`; storage never looks at single records.
"""

from comet.storage.config import (
    DEFAULT_FLUSH_INTERVAL_MS,
    DEFAULT_FLUSH_POLICY,
    DEFAULT_INDEX_INTERVAL_BYTES,
    DEFAULT_MAX_MESSAGE_BYTES,
    DEFAULT_RETENTION_BYTES,
    DEFAULT_RETENTION_MS,
    DEFAULT_SEGMENT_BYTES,
    DEFAULT_SEGMENT_MS,
    FLUSH_POLICIES,
    LogConfig,
)
from comet.storage.errors import (
    CorruptRecordError,
    InvalidConfigError,
    InvalidOffsetError,
    LogClosedError,
    LogFlushError,
    LogIOError,
    LogOfflineError,
    LogReadError,
    LogWriteError,
    OffsetOutOfRangeError,
    RecordTooLargeError,
    StorageError,
)
from comet.storage.flusher import LogFlusher
from comet.storage.log import PartitionLog
from comet.storage.log_append import AppendInfo
from comet.storage.log_read import ReadResult

__all__ = [
    "DEFAULT_FLUSH_INTERVAL_MS",
    "DEFAULT_FLUSH_POLICY",
    "DEFAULT_INDEX_INTERVAL_BYTES",
    "DEFAULT_MAX_MESSAGE_BYTES",
    "DEFAULT_RETENTION_BYTES",
    "DEFAULT_RETENTION_MS",
    "DEFAULT_SEGMENT_BYTES",
    "DEFAULT_SEGMENT_MS",
    "FLUSH_POLICIES",
    "AppendInfo",
    "CorruptRecordError",
    "InvalidConfigError",
    "InvalidOffsetError",
    "LogClosedError",
    "LogConfig",
    "LogFlushError",
    "LogFlusher",
    "LogIOError",
    "LogOfflineError",
    "LogReadError",
    "LogWriteError",
    "OffsetOutOfRangeError",
    "PartitionLog",
    "ReadResult",
    "RecordTooLargeError",
    "StorageError",
]
