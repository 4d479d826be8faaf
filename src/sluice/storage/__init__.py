"""Durable partition logs: segments, indexes, recovery, retention, the writer task.

Knows record batches (it validates and patches their headers) but nothing of Kafka requests.
"""

from sluice.config import AckLevel, AppendMode, LogConfig
from sluice.storage.cleaner import CleanerConfig, LogCleaner
from sluice.storage.log import FileSlice, PartitionLog
from sluice.storage.manager import Limits, LogManager, Topic
from sluice.storage.reader import SliceReader

__all__ = [
    "AckLevel",
    "AppendMode",
    "CleanerConfig",
    "FileSlice",
    "Limits",
    "LogCleaner",
    "LogConfig",
    "LogManager",
    "PartitionLog",
    "SliceReader",
    "Topic",
]
