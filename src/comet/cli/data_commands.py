"""`cometctl produce` and `cometctl consume`: records from a terminal or a pipe."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

import click

from comet.aio import (
    EARLIEST,
    LATEST,
    CometClient,
    Consumer,
    ConsumerConfig,
    Message,
    ProducerConfig,
    TopicProducer,
)
from comet.cli.ctl import CtlContext, fail, with_ctx
from comet.errors import CometError
from comet.records import decode_batches

PROGRESS_EVERY = 10_000


@click.command("produce")
@click.argument("topic")
@click.option("--key-separator", "-K", default=None, help="Split each line into KEY<sep>VALUE.")
@click.option(
    "--partitions",
    "-p",
    type=click.IntRange(1),
    default=1,
    show_default=True,
    help="Partitions if the topic has to be created.",
)
@click.option("--acks", type=click.Choice(["0", "1", "all"]), default="all", show_default=True)
@click.option(
    "--compression",
    type=click.Choice(["none", "gzip", "snappy", "lz4", "zstd"]),
    default="none",
    show_default=True,
)
@click.option("--quiet", "-q", is_flag=True, help="No progress on stderr.")
@with_ctx
def produce(
    ctx: CtlContext,
    topic: str,
    key_separator: str | None,
    partitions: int,
    acks: str,
    compression: str,
    quiet: bool,
) -> None:
    """Send one record per line of standard input to TOPIC."""
    cfg = ProducerConfig(
        ctx.bootstrap,
        topic=topic,
        partitions=partitions,
        acks="all" if acks == "all" else int(acks),  # type: ignore[arg-type]
        compression=None if compression == "none" else compression,
        buffer_size=100_000,
        batch_size=10_000,
    )

    async def main() -> int:
        sent = 0
        failures: list[BaseException] = []

        def on_delivery(_meta: Any, error: BaseException | None) -> None:
            if error is not None and not failures:
                failures.append(error)

        async with TopicProducer(cfg) as producer:
            for raw in sys.stdin.buffer:
                line = raw.rstrip(b"\r\n")
                key: bytes | None = None
                if key_separator is not None:
                    k, sep, v = line.partition(key_separator.encode())
                    key, line = (k, v) if sep else (None, line)
                handle = await producer.send(key, line)
                handle.add_done_callback(on_delivery)
                sent += 1
                if not quiet and sent % PROGRESS_EVERY == 0:
                    click.echo(f"\r{sent:,} records sent", err=True, nl=False)
            await producer.flush()
        if failures:
            raise failures[0]
        return sent

    try:
        sent = asyncio.run(main())
    except (CometError, ValueError) as exc:
        fail(str(exc))
    if not quiet:
        click.echo(f"\r{sent:,} records sent to {topic}", err=True)


def _text(value: bytes | None) -> str | None:
    return None if value is None else value.decode("utf-8", "backslashreplace")


def _emit(message: Message, fmt: str, print_key: bool) -> None:
    if fmt == "json":
        line = json.dumps(
            {
                "topic": message.topic,
                "partition": message.partition,
                "offset": message.offset,
                "timestamp": message.timestamp,
                "key": _text(message.key),
                "value": _text(message.value),
                "headers": {k: _text(v) for k, v in message.headers},
            }
        )
    else:
        value = _text(message.value) or ""
        line = f"{_text(message.key) or ''}\t{value}" if print_key else value
    click.echo(line)


@click.command("consume")
@click.argument("topic")
@click.option("--group", "-g", default=None, help="Consume as a member of GROUP and commit.")
@click.option("--from-beginning", is_flag=True, help="Start at the earliest offset.")
@click.option(
    "--max",
    "max_messages",
    type=click.IntRange(1),
    default=None,
    help="Exit after this many records.",
)
@click.option(
    "--idle-timeout",
    type=click.FloatRange(0.1),
    default=None,
    help="Exit when no record arrived for this many seconds.",
)
@click.option(
    "--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True
)
@click.option("--print-key", is_flag=True, help="Text format: KEY<TAB>VALUE.")
@with_ctx
def consume(
    ctx: CtlContext,
    topic: str,
    group: str | None,
    from_beginning: bool,
    max_messages: int | None,
    idle_timeout: float | None,
    fmt: str,
    print_key: bool,
) -> None:
    """Print records of TOPIC (all partitions) as they arrive; Ctrl-C stops."""
    reader = _consume_group if group else _consume_partitions
    try:
        count = asyncio.run(
            reader(
                ctx, topic, group or "", from_beginning, max_messages, idle_timeout, fmt, print_key
            )
        )
    except (CometError, ValueError) as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        return
    if count == 0 and fmt == "text":
        click.echo(f"no records from {topic}", err=True)


async def _consume_group(
    ctx: CtlContext,
    topic: str,
    group: str,
    from_beginning: bool,
    max_messages: int | None,
    idle_timeout: float | None,
    fmt: str,
    print_key: bool,
) -> int:
    cfg = ConsumerConfig(
        ctx.bootstrap, group=group, auto_offset_reset="earliest" if from_beginning else "latest"
    )
    count = 0
    async with Consumer(cfg) as consumer:
        stream = consumer.messages(topic)
        while max_messages is None or count < max_messages:
            try:
                message = await asyncio.wait_for(stream.__anext__(), idle_timeout)
            except (TimeoutError, StopAsyncIteration):
                break
            _emit(message, fmt, print_key)
            count += 1
        stream.mark_done()  # the last one printed is handled; close() commits it
    return count


async def _consume_partitions(
    ctx: CtlContext,
    topic: str,
    _group: str,
    from_beginning: bool,
    max_messages: int | None,
    idle_timeout: float | None,
    fmt: str,
    print_key: bool,
) -> int:
    count = 0
    last_record = time.monotonic()
    async with CometClient(ctx.bootstrap, timeout=ctx.timeout) as client:
        meta = await client.metadata([topic])
        partitions = [p.id for p in meta.topics[topic]]
        start = EARLIEST if from_beginning else LATEST
        positions = {p: await client.list_offsets(topic, p, start) for p in partitions}
        while max_messages is None or count < max_messages:
            fetches = [client.fetch(topic, p, positions[p], max_wait_ms=200) for p in partitions]
            got = 0
            for p, result in zip(partitions, await asyncio.gather(*fetches), strict=True):
                for r in decode_batches(result.records, positions[p]):
                    positions[p] = r.offset + 1
                    if max_messages is not None and count >= max_messages:
                        break
                    _emit(
                        Message(topic, p, r.offset, r.key, r.value, r.timestamp_ms, r.headers),
                        fmt,
                        print_key,
                    )
                    count += 1
                    got += 1
            now = time.monotonic()
            if got:
                last_record = now
            elif idle_timeout is not None and now - last_record >= idle_timeout:
                break
    return count


def register(cli: click.Group) -> None:
    """Attach produce and consume to cometctl."""
    cli.add_command(produce)
    cli.add_command(consume)
