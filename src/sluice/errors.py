"""Errors that cross layers, each carrying the Kafka error code the broker answers with.

Storage raises these; the broker maps them to the wire by ``error.code`` without knowing which layer
raised them.
"""

from __future__ import annotations

from enum import IntEnum


class ErrorCode(IntEnum):
    """Kafka protocol error codes (the subset sluice produces), as in the protocol guide."""

    UNKNOWN_SERVER_ERROR = -1
    NONE = 0
    OFFSET_OUT_OF_RANGE = 1
    CORRUPT_MESSAGE = 2
    UNKNOWN_TOPIC_OR_PARTITION = 3
    INVALID_FETCH_SIZE = 4
    LEADER_NOT_AVAILABLE = 5
    NOT_LEADER_OR_FOLLOWER = 6
    REQUEST_TIMED_OUT = 7
    MESSAGE_TOO_LARGE = 10
    OFFSET_METADATA_TOO_LARGE = 12
    NETWORK_EXCEPTION = 13
    COORDINATOR_LOAD_IN_PROGRESS = 14
    COORDINATOR_NOT_AVAILABLE = 15
    NOT_COORDINATOR = 16
    INVALID_TOPIC_EXCEPTION = 17
    RECORD_LIST_TOO_LARGE = 18
    NOT_ENOUGH_REPLICAS = 19
    INVALID_REQUIRED_ACKS = 21
    ILLEGAL_GENERATION = 22
    INCONSISTENT_GROUP_PROTOCOL = 23
    INVALID_GROUP_ID = 24
    UNKNOWN_MEMBER_ID = 25
    INVALID_SESSION_TIMEOUT = 26
    REBALANCE_IN_PROGRESS = 27
    INVALID_COMMIT_OFFSET_SIZE = 28
    TOPIC_AUTHORIZATION_FAILED = 29
    GROUP_AUTHORIZATION_FAILED = 30
    CLUSTER_AUTHORIZATION_FAILED = 31
    INVALID_TIMESTAMP = 32
    UNSUPPORTED_SASL_MECHANISM = 33
    ILLEGAL_SASL_STATE = 34
    UNSUPPORTED_VERSION = 35
    TOPIC_ALREADY_EXISTS = 36
    INVALID_PARTITIONS = 37
    INVALID_REPLICATION_FACTOR = 38
    INVALID_REPLICA_ASSIGNMENT = 39
    INVALID_CONFIG = 40
    NOT_CONTROLLER = 41
    INVALID_REQUEST = 42
    UNSUPPORTED_FOR_MESSAGE_FORMAT = 43
    POLICY_VIOLATION = 44
    OUT_OF_ORDER_SEQUENCE_NUMBER = 45
    DUPLICATE_SEQUENCE_NUMBER = 46
    INVALID_PRODUCER_EPOCH = 47
    INVALID_TXN_STATE = 48
    INVALID_PRODUCER_ID_MAPPING = 49
    INVALID_TRANSACTION_TIMEOUT = 50
    CONCURRENT_TRANSACTIONS = 51
    TRANSACTION_COORDINATOR_FENCED = 52
    UNSUPPORTED_COMPRESSION_TYPE = 76
    SASL_AUTHENTICATION_FAILED = 58
    UNKNOWN_PRODUCER_ID = 59
    TRANSACTIONAL_ID_AUTHORIZATION_FAILED = 53
    OPERATION_NOT_ATTEMPTED = 55
    PRODUCER_FENCED = 90
    KAFKA_STORAGE_ERROR = 56
    LOG_DIR_NOT_FOUND = 57
    NON_EMPTY_GROUP = 68
    GROUP_ID_NOT_FOUND = 69
    FETCH_SESSION_ID_NOT_FOUND = 70
    INVALID_FETCH_SESSION_EPOCH = 71
    UNKNOWN_LEADER_EPOCH = 75
    OFFSET_NOT_AVAILABLE = 78
    MEMBER_ID_REQUIRED = 79
    GROUP_MAX_SIZE_REACHED = 81
    FENCED_INSTANCE_ID = 82
    ELECTION_NOT_NEEDED = 84
    NO_REASSIGNMENT_IN_PROGRESS = 85
    INVALID_RECORD = 87
    UNSTABLE_OFFSET_COMMIT = 88
    THROTTLING_QUOTA_EXCEEDED = 89
    GROUP_SUBSCRIBED_TO_TOPIC = 86
    UNKNOWN_TOPIC_ID = 100
    TRANSACTIONAL_ID_NOT_FOUND = 105
    MISMATCHED_ENDPOINT_TYPE = 114
    UNSUPPORTED_ENDPOINT_TYPE = 115


class CloseConnection(Exception):
    """Drop this client's connection: what the protocol prescribes for input that cannot be
    answered (garbage, an unknown API or version, a failed acks=0 produce), and what the broker
    does when a handler fails unexpectedly. The server closes it; nothing else is affected."""


class SluiceError(Exception):
    """Base class; ``code`` is what the broker puts on the wire."""

    code: ErrorCode = ErrorCode.UNKNOWN_SERVER_ERROR


class CorruptRecordError(SluiceError):
    """Bytes that are not a well-formed record batch (bad bounds, CRC or magic)."""

    code = ErrorCode.CORRUPT_MESSAGE


class InvalidRecordError(SluiceError):
    """A well-formed batch whose contents break a rule (inconsistent counts, bad timestamps)."""

    code = ErrorCode.INVALID_RECORD


class RecordErrors(InvalidRecordError):
    """Records refused one by one (Kafka's RecordValidationException): the Produce answer lists
    each as (index of the record in its batch, message) in ``record_errors``."""

    def __init__(self, message: str, record_errors: list[tuple[int, str]]) -> None:
        super().__init__(message)
        self.record_errors = record_errors


class InvalidTimestampError(SluiceError):
    """A CreateTime batch stamped outside the topic's ``message.timestamp.before.max.ms`` /
    ``message.timestamp.after.max.ms`` of the broker's clock."""

    code = ErrorCode.INVALID_TIMESTAMP


class RecordTooLargeError(SluiceError):
    """A batch larger than the topic's ``max.message.bytes``."""

    code = ErrorCode.MESSAGE_TOO_LARGE


class OffsetOutOfRangeError(SluiceError):
    """A read below the log start offset or above the high watermark."""

    code = ErrorCode.OFFSET_OUT_OF_RANGE


class StorageError(SluiceError):
    """An I/O failure (ENOSPC, EIO...) in the storage layer; the log stays consistent."""

    code = ErrorCode.KAFKA_STORAGE_ERROR


class InvalidConfigError(SluiceError):
    """A configuration key or value the broker does not accept."""

    code = ErrorCode.INVALID_CONFIG


class InvalidTopicError(SluiceError):
    """A topic name outside Kafka's rules (length, characters)."""

    code = ErrorCode.INVALID_TOPIC_EXCEPTION


class UnknownTopicOrPartitionError(SluiceError):
    code = ErrorCode.UNKNOWN_TOPIC_OR_PARTITION


class UnknownTopicIdError(SluiceError):
    code = ErrorCode.UNKNOWN_TOPIC_ID


class OutOfOrderSequenceError(SluiceError):
    """An idempotent producer's batch does not continue its sequence (a gap)."""

    code = ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER


class InvalidProducerEpochError(SluiceError):
    """A batch from an older epoch of its producer: a zombie, fenced."""

    code = ErrorCode.INVALID_PRODUCER_EPOCH


class InvalidTxnStateError(SluiceError):
    """A producer's batch that does not fit its transaction state on the partition (Kafka's
    InvalidTxnStateException): a non-transactional batch while its transaction is open."""

    code = ErrorCode.INVALID_TXN_STATE


class TransactionCoordinatorFencedError(SluiceError):
    """A transaction marker from an older coordinator epoch than the partition has seen: a zombie
    coordinator, fenced."""

    code = ErrorCode.TRANSACTION_COORDINATOR_FENCED


class UnknownProducerIdError(SluiceError):
    """A batch continuing a sequence the partition has no state for (the producer expired)."""

    code = ErrorCode.UNKNOWN_PRODUCER_ID


class TopicAlreadyExistsError(SluiceError):
    code = ErrorCode.TOPIC_ALREADY_EXISTS


class InvalidPartitionsError(SluiceError):
    code = ErrorCode.INVALID_PARTITIONS


class PolicyViolationError(SluiceError):
    """A request the broker's configured limits forbid (e.g. ``max.broker.partitions``)."""

    code = ErrorCode.POLICY_VIOLATION


class LogClosedError(StorageError):
    """An operation on a log that has been closed or deleted."""


class Refused(SluiceError):
    """A request refused with a specific Kafka error code and a message for the client (for the
    refusals that have no error class of their own)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = ErrorCode(code)
