"""The synchronous Comet client: a blocking facade over comet.aio."""

from comet.aio.accumulator import BufferFullError
from comet.aio.addresses import parse_addresses
from comet.aio.channel import Message, MessageBatch
from comet.aio.config import ConsumerConfig, ProducerConfig
from comet.aio.delivery import DeliveryHandle, DeliveryHandles, RecordMetadata
from comet.aio.types import (
    BrokerInfo,
    ClusterMetadata,
    FetchResult,
    PartitionInfo,
    ProduceResult,
    TopicDescription,
    TopicInfo,
)
from comet.client.admin import (
    EARLIEST,
    LATEST,
    CometClient,
    create_topic,
    delete_topic,
    list_topics,
)
from comet.client.consumer import Consumer
from comet.client.producer import TopicProducer

__all__ = [
    "EARLIEST",
    "LATEST",
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
    "PartitionInfo",
    "ProduceResult",
    "ProducerConfig",
    "RecordMetadata",
    "TopicDescription",
    "TopicInfo",
    "TopicProducer",
    "create_topic",
    "delete_topic",
    "list_topics",
    "parse_addresses",
]
