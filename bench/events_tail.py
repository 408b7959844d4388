"""A consumer of the INVESTMENTS stream (docs/api.md "Events"): a durable pull consumer that
prints each event as a JSON line, checks that event_ids arrive consecutively, and acknowledges
each one after handling it. Usage:

    python -m bench.events_tail --nats nats://127.0.0.1:4222 [--durable tail] [--seconds 10]

Run again with the same --durable name, it continues where it stopped (JetStream keeps the
consumer's position); an event it had not acknowledged is delivered again, and its event_id
says it was seen (a real consumer keeps the last event_id it applied in its own database,
written in the same transaction as the event's effect, and skips anything not above it).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time

import orjson


async def tail(servers: str, durable: str, seconds: float) -> int:
    import nats
    from nats.errors import TimeoutError as NatsTimeout

    nc = await nats.connect(servers=servers.split(","))
    js = nc.jetstream()
    subscription = await js.pull_subscribe("investments.>", durable=durable, stream="INVESTMENTS")
    last = None  # a real consumer reads this from its own database
    deadline = time.monotonic() + seconds if seconds else None
    try:
        while deadline is None or time.monotonic() < deadline:
            try:
                messages = await subscription.fetch(100, timeout=1)
            except NatsTimeout:
                continue
            for message in messages:
                event = orjson.loads(message.data)
                if last is not None and event["event_id"] <= last:
                    await message.ack()  # seen already: a redelivery
                    continue
                if last is not None and event["event_id"] != last + 1:
                    print(f"gap: {last} then {event['event_id']}", file=sys.stderr)
                print(orjson.dumps(event).decode(), flush=True)  # the event's effect
                last = event["event_id"]  # ... committed with it, then:
                await message.ack()
    finally:
        await nc.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.events_tail", description=__doc__)
    parser.add_argument("--nats", default="nats://127.0.0.1:4222", help="NATS_URL")
    parser.add_argument("--durable", default="tail", help="the consumer's name")
    parser.add_argument("--seconds", type=float, default=0, help="stop after (0: never)")
    args = parser.parse_args(argv)
    return asyncio.run(tail(args.nats, args.durable, args.seconds))


if __name__ == "__main__":
    raise SystemExit(main())
