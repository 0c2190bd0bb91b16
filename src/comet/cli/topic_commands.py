"""`cometctl topic create|list|describe|delete`."""

from __future__ import annotations

import click
from rich.table import Table

from comet.cli.ctl import CtlContext, fail, with_ctx


@click.group("topic")
def topic() -> None:
    """Create, list, describe and delete topics."""


@topic.command("create")
@click.argument("name")
@click.option("--partitions", "-p", type=click.IntRange(1), default=1, show_default=True)
@click.option("--replication-factor", "-r", type=click.IntRange(1), default=1, show_default=True)
@click.option(
    "--config", "-c", "configs", multiple=True, metavar="KEY=VALUE", help="Topic config override."
)
@click.option("--if-not-exists", is_flag=True, help="Succeed when the topic already exists.")
@with_ctx
def create(
    ctx: CtlContext,
    name: str,
    partitions: int,
    replication_factor: int,
    configs: tuple[str, ...],
    if_not_exists: bool,
) -> None:
    """Create topic NAME."""
    overrides = {}
    for item in configs:
        key, sep, value = item.partition("=")
        if not sep or not key:
            fail(f"--config: {item!r} must be KEY=VALUE")
        overrides[key] = value
    created = ctx.run(
        lambda c: c.create_topic(
            name, partitions, replication_factor, overrides, exist_ok=if_not_exists
        )
    )
    ctx.emit(
        {"topic": name, "created": created},
        f"created topic {name}" if created else f"topic {name} already exists",
    )


@topic.command("list")
@with_ctx
def list_(ctx: CtlContext) -> None:
    """List topics."""
    topics = ctx.run(lambda c: c.list_topics())
    table = Table("topic", "partitions", "replication")
    for t in topics:
        table.add_row(t.name, str(t.partitions), str(t.replication_factor))
    ctx.emit(
        [
            {"name": t.name, "partitions": t.partitions, "replication_factor": t.replication_factor}
            for t in topics
        ],
        table,
    )


@topic.command("describe")
@click.argument("name")
@with_ctx
def describe(ctx: CtlContext, name: str) -> None:
    """Show a topic's configuration, replicas and log offsets."""
    d = ctx.run(lambda c: c.describe_topic(name))
    table = Table(
        "partition",
        "leader",
        "replicas",
        "isr",
        "start",
        "end",
        "high watermark",
        "size",
        "segments",
        title=f"{d.name} (replication factor {d.replication_factor})",
    )
    for p in d.partitions:
        table.add_row(
            str(p.id),
            p.leader,
            ",".join(p.replicas),
            ",".join(p.isr),
            str(p.log_start_offset),
            str(p.log_end_offset),
            str(p.high_watermark),
            str(p.size_bytes),
            str(p.segment_count),
        )
    config = Table("config", "value")
    for key, value in sorted(d.config.items()):
        config.add_row(key, value)
    data = {
        "name": d.name,
        "replication_factor": d.replication_factor,
        "config": dict(d.config),
        "partitions": [
            {
                "id": p.id,
                "leader": p.leader,
                "replicas": list(p.replicas),
                "isr": list(p.isr),
                "log_start_offset": p.log_start_offset,
                "log_end_offset": p.log_end_offset,
                "high_watermark": p.high_watermark,
                "size_bytes": p.size_bytes,
                "segment_count": p.segment_count,
            }
            for p in d.partitions
        ],
    }
    if ctx.as_json:
        ctx.emit(data)
    else:
        ctx.emit(data, table)
        ctx.emit(data, config)


@topic.command("delete")
@click.argument("name")
@with_ctx
def delete(ctx: CtlContext, name: str) -> None:
    """Delete topic NAME and all its data."""
    ctx.run(lambda c: c.delete_topic(name))
    ctx.emit({"topic": name, "deleted": True}, f"deleted topic {name}")


def register(cli: click.Group) -> None:
    """Attach the topic commands to cometctl."""
    cli.add_command(topic)
