"""Kafka wire protocol, sans-IO: bytes in, typed values out, and back. No sockets here."""
