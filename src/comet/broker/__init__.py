"""The broker layer: request logic over storage and a coordinator."""

from comet.broker.broker import Broker, TopicDescription
from comet.broker.config import BrokerConfig

__all__ = ["Broker", "BrokerConfig", "TopicDescription"]
