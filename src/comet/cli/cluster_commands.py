"""`cometctl cluster`: brokers, controller and where every replica lives."""

from __future__ import annotations

import click
from rich.table import Table

from comet.cli.ctl import CtlContext, with_ctx


@click.command("cluster")
@with_ctx
def cluster(ctx: CtlContext) -> None:
    """Show brokers, the controller and partition placement."""
    meta = ctx.run(lambda c: c.metadata())
    brokers = Table("broker", "address", "role", title=f"cluster {meta.cluster_id}")
    for b in meta.brokers:
        brokers.add_row(b.id, b.address, "controller" if b.id == meta.controller_id else "")
    placement = Table("topic", "partition", "leader", "replicas", "isr")
    for topic, parts in sorted(meta.topics.items()):
        for p in parts:
            placement.add_row(topic, str(p.id), p.leader, ",".join(p.replicas), ",".join(p.isr))
    data = {
        "cluster_id": meta.cluster_id,
        "controller_id": meta.controller_id or None,
        "brokers": [{"id": b.id, "address": b.address} for b in meta.brokers],
        "topics": {
            topic: [
                {
                    "partition": p.id,
                    "leader": p.leader,
                    "replicas": list(p.replicas),
                    "isr": list(p.isr),
                }
                for p in parts
            ]
            for topic, parts in sorted(meta.topics.items())
        },
    }
    if ctx.as_json:
        ctx.emit(data)
    else:
        ctx.emit(data, brokers)
        ctx.emit(data, placement)


def register(cli: click.Group) -> None:
    """Attach the cluster command to cometctl."""
    cli.add_command(cluster)
