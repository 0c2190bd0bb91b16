"""The synchronous Comet client: a blocking facade over comet.aio."""

from comet.aio.addresses import parse_addresses
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

__all__ = [
    "EARLIEST",
    "LATEST",
    "BrokerInfo",
    "ClusterMetadata",
    "CometClient",
    "FetchResult",
    "PartitionInfo",
    "ProduceResult",
    "TopicDescription",
    "TopicInfo",
    "create_topic",
    "delete_topic",
    "list_topics",
    "parse_addresses",
]
