"""A request the broker refuses with a specific Kafka error code and a message for the client."""

from __future__ import annotations

from sluice.errors import ErrorCode, SluiceError


class Refused(SluiceError):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = ErrorCode(code)
