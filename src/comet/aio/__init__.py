"""The asyncio Comet client."""

from comet.aio.accumulator import BufferFullError, partition_for_key
from comet.aio.addresses import parse_addresses
from comet.aio.channel import Message, MessageBatch
from comet.aio.client import EARLIEST, LATEST, CometClient, with_retries
from comet.aio.config import ConsumerConfig, ProducerConfig
from comet.aio.consumer import BatchStream, Consumer, MessageStream
from comet.aio.delivery import DeliveryHandle, DeliveryHandles, RecordMetadata
from comet.aio.producer import TopicProducer
from comet.aio.types import (
    BrokerInfo,
    ClusterMetadata,
    FetchResult,
    PartitionInfo,
    ProduceResult,
    TopicDescription,
    TopicInfo,
)

__all__ = [
    "EARLIEST",
    "LATEST",
    "BatchStream",
    "BrokerInfo",
    "BufferFullError",
    "ClusterMetadata",
    "CometClient",
    "Consumer",
    "ConsumerConfig",
    "DeliveryHandle",
    "DeliveryHandles",
    "FetchResult",
    "Message",
    "MessageBatch",
    "MessageStream",
    "PartitionInfo",
    "ProduceResult",
    "ProducerConfig",
    "RecordMetadata",
    "TopicDescription",
    "TopicInfo",
    "TopicProducer",
    "parse_addresses",
    "partition_for_key",
    "with_retries",
]
