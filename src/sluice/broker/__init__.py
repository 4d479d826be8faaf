"""The broker layer: one thin handler per Kafka API over storage and the coordinators."""

from sluice.broker.broker import Broker

__all__ = ["Broker"]
