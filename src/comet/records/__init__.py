"""Kafka RecordBatch v2 codec shared by the client and the storage engine.

The broker only uses the header functions (`iter_batches`, `validate_batches`,
`stamp_batch`); record-level encoding and decoding belongs to clients.
"""

from comet.records.batch import (
    BATCH_HEADER_SIZE,
    LOG_OVERHEAD,
    BatchHeader,
    InvalidBatchError,
    batch_size_at,
    iter_batches,
    parse_header,
    stamp_batch,
    validate_batches,
)
from comet.records.builder import Compression, RecordBatchBuilder, encode_batch
from comet.records.reader import Record, RecordSet, decode_batches

__all__ = [
    "BATCH_HEADER_SIZE",
    "LOG_OVERHEAD",
    "BatchHeader",
    "Compression",
    "InvalidBatchError",
    "Record",
    "RecordBatchBuilder",
    "RecordSet",
    "batch_size_at",
    "decode_batches",
    "encode_batch",
    "iter_batches",
    "parse_header",
    "stamp_batch",
    "validate_batches",
]
