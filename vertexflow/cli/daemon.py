"""``vertexflow daemon --config daemon.toml``: the long-running service (vertexflow.daemon).

Exit status: 0 after a drain (SIGTERM/SIGINT); 2 for a bad config file, a
token that is too short, a TLS certificate or key that cannot be used, a
journal that cannot be opened or an address that cannot be bound, with a
message naming the file and key.
"""

from __future__ import annotations

import os

import click

from .. import logs
from ..errors import ConfigError
from .context import Ctx
from .run import reported, run_or_exit


@click.command("daemon")
@click.option("--config", "daemon_config", required=True, type=click.Path(dir_okay=False),
              envvar="VERTEXFLOW_DAEMON_CONFIG", help="The daemon's config file (TOML): [daemon] and [[jobs]].")
@click.option("--check", is_flag=True, help="Check the config file and exit (0: fine, 2: the error).")
@click.option("--tls-cert", type=click.Path(dir_okay=False), default=None,
              help="Serve HTTPS with this certificate chain (PEM); overrides [daemon] tls_cert.")
@click.option("--tls-key", type=click.Path(dir_okay=False), default=None,
              help="The certificate's private key (PEM, unencrypted) [in the --tls-cert file].")
@click.pass_context
def daemon(ctx: click.Context, daemon_config: str, check: bool, tls_cert: str | None, tls_key: str | None) -> None:
    """Run the jobs of a config file on their schedules, with an HTTP API, a live
    dashboard and Prometheus metrics (http://127.0.0.1:8787/ by default).

    SIGTERM/SIGINT drain (transfers in flight finish, the journal is flushed);
    SIGHUP reloads the config (and the TLS certificate) without dropping
    running jobs. docs/daemon.md is the reference.
    """
    from ..daemon.service import Daemon

    parent = ctx.parent
    if parent is not None and parent.get_parameter_source("log_level") == click.core.ParameterSource.DEFAULT:
        # a service's log is its record: info events (runs started and finished) by default
        logs.configure(parent.params.get("log_format", "auto"), "info")

    def remotes() -> object:
        return ctx.find_object(Ctx).config  # type: ignore[union-attr]

    with reported():
        if tls_key is not None and tls_cert is None:
            raise ConfigError("--tls-key: given without --tls-cert")
        # absolute: the daemon reads them again on SIGHUP
        tls = (os.path.abspath(tls_cert), os.path.abspath(tls_key or tls_cert)) if tls_cert else None
        service = Daemon(daemon_config, fallback_remotes=remotes, tls=tls)  # type: ignore[arg-type]
    if check:
        click.echo(f"{daemon_config}: OK ({len(service.config.jobs)} jobs)")
        return
    run_or_exit(service.serve)  # KeyboardInterrupt exits 130, though the service handles the signals itself
