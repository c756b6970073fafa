"""``txn`` and ``jti`` are UUIDv7 (RFC 9562 §5.7): unique, time-ordered, 32 hex characters."""

from __future__ import annotations

import time
import uuid

from broker.runtime import Broker


def test_ids_are_uuid7_time_ordered_and_unique() -> None:
    before_ms = time.time_ns() // 1_000_000
    ids = [Broker.new_id() for _ in range(10_000)]
    after_ms = time.time_ns() // 1_000_000
    assert len(set(ids)) == len(ids)
    assert ids == sorted(ids)  # each after the one before: the indexes grow at their end
    for text in (ids[0], ids[-1]):
        u = uuid.UUID(hex=text)
        assert len(text) == 32 and text == u.hex
        assert u.version == 7 and u.variant == uuid.RFC_4122
        assert before_ms <= u.int >> 80 <= after_ms  # the millisecond it was made
