"""The asyncio Comet client."""

from comet.aio.addresses import parse_addresses
from comet.aio.client import EARLIEST, LATEST, CometClient, with_retries
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
    "BrokerInfo",
    "ClusterMetadata",
    "CometClient",
    "FetchResult",
    "PartitionInfo",
    "ProduceResult",
    "TopicDescription",
    "TopicInfo",
    "parse_addresses",
    "with_retries",
]
