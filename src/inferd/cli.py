"""The `inferd` command: serve models, and manage the catalog, tokens and usage."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import typer

from inferd.settings import Settings

app = typer.Typer(
    help="inferd: a self-hosted DeepInfra. Open models behind DeepInfra's, OpenAI's and Infinity's APIs.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
models_app = typer.Typer(help="The model catalog.", no_args_is_help=True)
tokens_app = typer.Typer(help="API tokens (stored hashed; a token is shown only when made).", no_args_is_help=True)
app.add_typer(models_app, name="models")
app.add_typer(tokens_app, name="tokens")

CatalogOpt = Annotated[
    Path | None, typer.Option("--catalog", "-c", help="Catalog YAML [env INFERD_CATALOG; default: embedded]")
]
DatabaseOpt = Annotated[
    str | None,
    typer.Option("--database-url", help="SQLAlchemy URL [env INFERD_DATABASE_URL; default: SQLite in --data-dir]"),
]
DataDirOpt = Annotated[Path | None, typer.Option("--data-dir", help="Where the SQLite file lives [env INFERD_DATA_DIR]")]


def build_settings(**overrides: Any) -> Settings:
    """Flags given on the command line win over INFERD_* variables, which win over defaults."""
    return Settings(**{key: value for key, value in overrides.items() if value is not None})


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Address to bind [env INFERD_HOST; default 127.0.0.1]")] = None,
    port: Annotated[int | None, typer.Option(help="Port [env INFERD_PORT; default 8000]")] = None,
    catalog: CatalogOpt = None,
    database_url: DatabaseOpt = None,
    data_dir: DataDirOpt = None,
    no_auth: Annotated[bool, typer.Option("--no-auth", help="No tokens needed (local use only)")] = False,
    infinity_prefix: Annotated[
        str | None, typer.Option(help="Path prefix of the Infinity API [env INFERD_INFINITY_PREFIX; default: root]")
    ] = None,
    too_long: Annotated[
        str | None, typer.Option(help="Inputs past the context: 'truncate' (default) or 'error' (413)")
    ] = None,
    log_level: Annotated[str | None, typer.Option(help="DEBUG, INFO, WARNING... [env INFERD_LOG_LEVEL]")] = None,
    log_format: Annotated[str | None, typer.Option(help="'text' or 'json' [env INFERD_LOG_FORMAT]")] = None,
    access_log: Annotated[bool, typer.Option("--access-log", help="Log every request")] = False,
    worker: Annotated[bool, typer.Option("--worker", hidden=True, help="Run the server itself, unsupervised")] = False,
) -> None:
    """Start the server: load the catalog's models and serve every API on HOST:PORT.

    The server runs under a small supervisor: however it ends (SIGTERM/SIGINT, a crash, the
    OOM killer), every process it started (vLLM's engine) ends with it."""
    if not worker:
        import sys

        from inferd.supervisor import supervise

        raise typer.Exit(supervise([sys.executable, "-m", "inferd", *sys.argv[1:], "--worker"]))

    import uvicorn

    from inferd.api import create_app
    from inferd.catalog import CatalogError
    from inferd.observability.logs import configure_logging

    settings = build_settings(
        host=host,
        port=port,
        catalog=catalog,
        database_url=database_url,
        data_dir=data_dir,
        auth=False if no_auth else None,
        infinity_prefix=infinity_prefix,
        too_long=too_long,
        log_level=log_level,
        log_format=log_format,
        access_log=True if access_log else None,
    )
    configure_logging(settings.log_level, settings.log_format)
    try:
        application = create_app(settings)
    except CatalogError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    uvicorn.run(
        application,
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        loop="uvloop",
        http="httptools",
        timeout_graceful_shutdown=10,
        timeout_keep_alive=settings.keep_alive_s,
    )
    from inferd.supervisor import exit_now, reap_children

    reap_children()
    exit_now(0)


@models_app.command("list")
def models_list(catalog: CatalogOpt = None) -> None:
    """List the catalog's models: id, task, backend, versions, aliases and pricing."""
    from inferd.catalog import CatalogError, load_catalog

    try:
        entries = load_catalog(build_settings(catalog=catalog).catalog)
    except CatalogError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    for spec in entries:
        pricing = spec.pricing.model_dump(exclude_defaults=False) if spec.pricing else "free"
        typer.echo(f"{spec.id}")
        typer.echo(f"    task: {spec.task.value}   backend: {spec.backend}")
        for version in spec.versions:
            typer.echo(f"    version {version.name}: {version.source}")
        if spec.aliases:
            typer.echo(f"    aliases: {', '.join(spec.aliases)}")
        typer.echo(f"    pricing: {pricing}")


def _with_db(settings: Settings, work):
    from inferd.accounts.db import Database

    async def run():
        db = Database(settings.resolved_database_url())
        try:
            await db.migrate()
            return await work(db)
        finally:
            await db.close()

    return asyncio.run(run())


@tokens_app.command("create")
def tokens_create(
    name: Annotated[str, typer.Argument(help="A name to recognise the token by")],
    admin: Annotated[bool, typer.Option("--admin", help="An admin token")] = False,
    database_url: DatabaseOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Make a new API token and print it (the only time it is shown)."""
    from inferd.accounts.tokens import TokenStore

    settings = build_settings(database_url=database_url, data_dir=data_dir)
    secret, row = _with_db(settings, lambda db: TokenStore(db).create(name, admin=admin))
    typer.echo(f"token_id: {row.token_id}\nname:     {row.name}\ntoken:    {secret}")


@tokens_app.command("list")
def tokens_list(
    all_: Annotated[bool, typer.Option("--all", help="Include revoked tokens")] = False,
    database_url: DatabaseOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """List tokens (ids, names, last four characters; never the tokens themselves)."""
    from inferd.accounts.tokens import TokenStore

    settings = build_settings(database_url=database_url, data_dir=data_dir)
    rows = _with_db(settings, lambda db: TokenStore(db).list(include_revoked=all_))
    typer.echo(f"{'TOKEN ID':<22} {'NAME':<20} {'ENDS':<6} {'ADMIN':<6} {'CREATED':<20} REVOKED")
    for row in rows:
        revoked = row.revoked_at.strftime("%Y-%m-%d %H:%M") if row.revoked_at else ""
        typer.echo(
            f"{row.token_id:<22} {row.name[:20]:<20} …{row.hint:<5} {'yes' if row.is_admin else '':<6} "
            f"{row.created_at.strftime('%Y-%m-%d %H:%M'):<20} {revoked}"
        )


@tokens_app.command("revoke")
def tokens_revoke(
    token: Annotated[str, typer.Argument(help="The token id (tok_...) or the token itself")],
    database_url: DatabaseOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Revoke a token. A running server stops accepting it within a few seconds."""
    from inferd.accounts.tokens import TokenStore

    settings = build_settings(database_url=database_url, data_dir=data_dir)
    if not _with_db(settings, lambda db: TokenStore(db).revoke(token)):
        typer.echo(f"no active token {token!r}", err=True)
        raise typer.Exit(1)
    typer.echo(f"revoked {token}")


@app.command()
def usage(
    days: Annotated[int, typer.Option(help="Look back this many days (0 = all time)")] = 30,
    token_id: Annotated[str | None, typer.Option("--token-id", help="Only this token's requests")] = None,
    database_url: DatabaseOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Requests, tokens and cost per model, from the usage records."""
    from inferd.accounts.usage import usage_summary

    settings = build_settings(database_url=database_url, data_dir=data_dir)
    since = datetime.now(UTC) - timedelta(days=days) if days > 0 else None
    rows = _with_db(settings, lambda db: usage_summary(db, since=since, token_id=token_id))
    typer.echo(f"{'MODEL':<44} {'TASK':<12} {'STATUS':<10} {'REQUESTS':>8} {'IN TOKENS':>10} {'OUT TOKENS':>10} {'COST $':>12}")
    total = 0.0
    for row in rows:
        cost = (row["cost_cents"] or 0) / 100
        total += cost
        typer.echo(
            f"{row['model'][:44]:<44} {row['task'][:12]:<12} {row['status']:<10} {row['requests']:>8} "
            f"{row['input_tokens'] or 0:>10} {row['output_tokens'] or 0:>10} {cost:>12.6f}"
        )
    typer.echo(f"{'total':<44} {'':<12} {'':<10} {'':>8} {'':>10} {'':>10} {total:>12.6f}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
