"""`cometctl group list|describe`: members, assignment, committed offsets and lag."""

from __future__ import annotations

import click
from rich.table import Table

from comet.cli.ctl import CtlContext, with_ctx


@click.group("group")
def group() -> None:
    """Inspect consumer groups."""


@group.command("list")
@with_ctx
def list_(ctx: CtlContext) -> None:
    """List consumer groups."""
    groups = ctx.run(lambda c: c.list_groups())
    table = Table("group", "state", "generation", "members")
    for g in groups:
        table.add_row(g.group, g.state, str(g.generation), str(g.members))
    ctx.emit(
        [
            {"group": g.group, "state": g.state, "generation": g.generation, "members": g.members}
            for g in groups
        ],
        table,
    )


@group.command("describe")
@click.argument("name")
@with_ctx
def describe(ctx: CtlContext, name: str) -> None:
    """Show a group's members, assignment, committed offsets and lag."""
    d = ctx.run(lambda c: c.describe_group(name))
    members = Table(
        "member",
        "client",
        "topics",
        "assignment",
        title=f"group {d.group}: {d.state}, generation {d.generation}",
    )
    for m in d.members:
        assigned = "; ".join(
            f"{tp.topic}[{','.join(map(str, tp.partitions))}]" for tp in m.assignment
        )
        members.add_row(m.member_id, m.client_id, ",".join(m.topics), assigned)
    lag = Table("topic", "partition", "committed", "log end", "lag")
    for o in d.offsets:
        lag.add_row(o.topic, str(o.partition), str(o.committed), str(o.log_end_offset), str(o.lag))
    data = {
        "group": d.group,
        "state": d.state,
        "generation": d.generation,
        "coordinator": d.coordinator_id,
        "members": [
            {
                "member_id": m.member_id,
                "client_id": m.client_id,
                "topics": list(m.topics),
                "assignment": {tp.topic: list(tp.partitions) for tp in m.assignment},
            }
            for m in d.members
        ],
        "offsets": [
            {
                "topic": o.topic,
                "partition": o.partition,
                "committed": o.committed,
                "log_end_offset": o.log_end_offset,
                "lag": o.lag,
            }
            for o in d.offsets
        ],
    }
    if ctx.as_json:
        ctx.emit(data)
    else:
        ctx.emit(data, members)
        ctx.emit(data, lag)


def register(cli: click.Group) -> None:
    """Attach the group commands to cometctl."""
    cli.add_command(group)
