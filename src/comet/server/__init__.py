"""The gRPC server layer: BrokerService, health checking and reflection."""

from comet.server.app import BrokerServer, parse_listen_address
from comet.server.servicer import BrokerServicer

__all__ = ["BrokerServer", "BrokerServicer", "parse_listen_address"]
