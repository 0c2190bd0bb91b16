"""`cometctl`: the operator's and developer's tool.

Every command takes --bootstrap (or COMET_BOOTSTRAP); tables are for people,
--json for scripts; errors are one line on stderr and a non-zero exit.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import sys
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.table import Table

from comet.aio import CometClient
from comet.errors import CometError

T = TypeVar("T")
# Wide tables when output goes to a file or a pipe (a terminal sets its own width).
console = Console(width=None if sys.stdout.isatty() or "COLUMNS" in os.environ else 200)


class CtlContext:
    """Options shared by every command."""

    def __init__(self, bootstrap: str, as_json: bool, timeout: float) -> None:
        self.bootstrap = bootstrap
        self.as_json = as_json
        self.timeout = timeout

    def run(self, action: Callable[[CometClient], Awaitable[T]]) -> T:
        """Open a client, run `action`, close it; CometError becomes a one-line error."""

        async def main() -> T:
            async with CometClient(self.bootstrap, timeout=self.timeout) as client:
                return await action(client)

        try:
            return asyncio.run(main())
        except (CometError, ValueError) as exc:
            fail(str(exc))

    def emit(self, data: Any, table: Table | str | None = None) -> None:
        """Print `data` as JSON with --json, else the human form."""
        if self.as_json or table is None:
            click.echo(json.dumps(data, indent=2, sort_keys=True))
        else:
            console.print(table)


def fail(message: str, code: int = 1) -> Any:
    """Print one error line and exit non-zero."""
    click.echo(f"cometctl: error: {message}", err=True)
    sys.exit(code)


pass_ctx = click.make_pass_decorator(CtlContext)


def with_ctx(func: Callable[..., T]) -> Callable[..., T]:
    """Decorator: pass the CtlContext as the first argument."""

    @pass_ctx
    @functools.wraps(func)
    def wrapper(ctx: CtlContext, *args: Any, **kwargs: Any) -> T:
        return func(ctx, *args, **kwargs)

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option(
    "--bootstrap",
    "-b",
    envvar="COMET_BOOTSTRAP",
    default="localhost:6174",
    show_default=True,
    help="Comma-separated broker addresses.",
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable JSON output.")
@click.option(
    "--timeout",
    type=click.FloatRange(0.1),
    default=10.0,
    show_default=True,
    help="Seconds per call.",
)
@click.pass_context
def cli(ctx: click.Context, bootstrap: str, as_json: bool, timeout: float) -> None:
    """Manage and exercise a Comet cluster."""
    ctx.obj = CtlContext(bootstrap, as_json, timeout)


def main() -> None:
    """Entry point of the cometctl command."""
    from comet.cli import bench, cluster_commands, data_commands, group_commands, topic_commands

    topic_commands.register(cli)
    data_commands.register(cli)
    group_commands.register(cli)
    cluster_commands.register(cli)
    bench.register(cli)
    cli()


if __name__ == "__main__":
    main()
