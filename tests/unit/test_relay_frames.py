"""The relay's chained messages are written as ready protocol frames (service/relay.py
`chained_frame`): what nats-py's publish() queues for the same message with the headers the
round's last message is sent with (`chained_headers`), the same control line's fields (nats-py
leaves an empty reply field between two spaces), the same headers and body."""

from __future__ import annotations

import asyncio
import json

import pytest
from nats.aio.client import Client

from service.relay import Event, chained_frame, chained_headers, events_of


def fields(frames: bytes) -> list[tuple[list[bytes], bytes]]:
    """Each HPUB frame as its control line's fields and the bytes after that line."""
    found = []
    while frames:
        line, rest = frames.split(b"\r\n", 1)
        op, subject, header_size, total_size = line.split()
        assert op == b"HPUB"
        size = int(total_size)
        assert rest[size : size + 2] == b"\r\n"
        found.append(([subject, header_size, total_size], rest[:size]))
        frames = rest[size + 2 :]
    return found


def queued_by_nats_py(event: Event) -> bytes:
    """What publish() puts in the connection's queue (a client never connected queues only)."""
    client = Client()
    body = event.body.encode()
    headers = chained_headers(event)  # as the round's last message is sent
    asyncio.run(client._send_publish(event.subject, "", body, len(body), headers))
    [frame] = client._pending
    return bytes(frame)


@pytest.mark.parametrize(
    "event",
    [
        Event(2, "investments.accepted", '{"event_id":2,"type":"accepted"}', 0.0),
        Event(10**12, "investments.cancelled", '{"event_id":1000000000000,"title":"é"}', 0.0),
    ],
)
def test_a_chained_frame_is_what_nats_py_would_send(event: Event) -> None:
    [(line, message)] = fields(chained_frame(event))
    assert (line, message) == fields(queued_by_nats_py(event))[0]
    assert message.endswith(event.body.encode())


def test_chained_frames_join_into_one_buffer() -> None:
    events = [Event(n, "investments.accepted", f'{{"event_id":{n}}}', 0.0) for n in (5, 6)]
    joined = b"".join(map(chained_frame, events))
    assert fields(joined) == fields(queued_by_nats_py(events[0]) + queued_by_nats_py(events[1]))
    assert len(fields(joined)) == 2


def test_a_rounds_rows_are_rendered_as_events_after_the_streams_last_up_to_the_limit() -> None:
    """`events_of`: `relay-round`'s rows (first event_id, type, `at`, recorded_at, the events'
    columns) as events in event_id order, those up to `after` left out, at most `limit`, each
    body the contract's JSON in its key order (docs/api.md "Events")."""
    at = "2026-12-07 20:00:00"
    rows = [
        (5, "accepted", at, 1.5, [11, 12], [1, 2], [7, 7], [1000, 2000], [1000, 3000], [1, 2]),
        (7, "cancelled", at, 2.5, [11], [1], [7], [1000], [2000], [1]),
    ]
    assert [e.event_id for e in events_of(rows, 4, 10)] == [5, 6, 7]
    six, seven = events_of(rows, 5, 2)
    assert six.body == (
        '{"event_id":6,"type":"accepted","investment_id":12,"user_id":2,"goods_id":7,'
        '"amount":2000,"at":"2026-12-07 20:00:00","current_investing_amount":3000,'
        '"investor_count":2}'
    )
    assert (six.subject, six.recorded_at) == ("investments.accepted", 1.5)
    assert (seven.subject, seven.recorded_at) == ("investments.cancelled", 2.5)
    assert json.loads(seven.body) == {
        "event_id": 7, "type": "cancelled", "investment_id": 11, "user_id": 1, "goods_id": 7,
        "amount": 1000, "at": at, "current_investing_amount": 2000, "investor_count": 1,
    }  # fmt: skip
    assert [e.event_id for e in events_of(rows, 5, 1)] == [6]
    assert events_of(rows, 7, 10) == []
