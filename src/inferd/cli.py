"""The `inferd` command: serve models, and manage the catalog, tokens and usage."""

from __future__ import annotations

import asyncio
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from inferd.cli_deploy import deploy_app, lora_app
from inferd.settings import Settings

app = typer.Typer(
    help="inferd: a self-hosted DeepInfra. Open models behind DeepInfra's, OpenAI's and Infinity's APIs.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
models_app = typer.Typer(help="The model catalog.", no_args_is_help=True)
tokens_app = typer.Typer(help="API tokens (stored hashed; a token is shown only when made).", no_args_is_help=True)
accounts_app = typer.Typer(
    help="Accounts: each owns its tokens, usage and limits; the admin account (acc_admin) manages them all.",
    no_args_is_help=True,
)
app.add_typer(models_app, name="models")
app.add_typer(tokens_app, name="tokens")
app.add_typer(accounts_app, name="accounts")
app.add_typer(deploy_app, name="deploy")
app.add_typer(lora_app, name="lora")

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
    ray: Annotated[bool, typer.Option("--ray", help="Run on Ray Serve: replicas per model, autoscaling "
                                      "(`--ray ADDRESS` joins a cluster; alone, a local Ray). docs/scale-out.md")] = False,
    ray_address: Annotated[str | None, typer.Option(
        "--ray-address", help="The Ray cluster to join (implies --ray) [env INFERD_RAY_ADDRESS]")] = None,
) -> None:
    """Start the server: load the catalog's models and serve every API on HOST:PORT.

    The server runs under a small supervisor: however it ends (SIGTERM/SIGINT, a crash, the
    OOM killer), every process it started (vLLM's engine) ends with it. With --ray it runs as
    a Ray Serve application instead (Ray starts and ends its own processes)."""
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
        ray_address=ray_address,
    )
    # a local Ray (--ray without an address) is the server's own: its processes join the server's
    # process group, and the supervisor ends them with it, whatever ends the server
    if not (worker or ray_address):
        import sys

        from inferd.supervisor import supervise

        raise typer.Exit(supervise([sys.executable, "-m", "inferd", *sys.argv[1:], "--worker"]))

    from inferd.api import create_app
    from inferd.api.app import serve_http
    from inferd.catalog import CatalogError, load_catalog
    from inferd.observability.logs import configure_logging

    configure_logging(settings.log_level, settings.log_format)
    try:
        if ray or ray_address:
            from inferd.cluster.serve import run

            raise typer.Exit(run(settings, load_catalog(settings.catalog)))
        application = create_app(settings)
    except CatalogError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    serve_http(application, settings)
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
    """Run ``work(db)`` on the migrated database; an InferdError (no such account...) is a
    one-line error and exit status 1."""
    from inferd.accounts.db import Database
    from inferd.errors import InferdError

    async def run():
        db = Database(settings.resolved_database_url())
        try:
            await db.migrate()
            return await work(db)
        finally:
            await db.close()

    try:
        return asyncio.run(run())
    except InferdError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(1) from None


@tokens_app.command("create")
def tokens_create(
    name: Annotated[str, typer.Argument(help="A name to recognise the token by")],
    account: Annotated[
        str | None, typer.Option("--account", help="The account it belongs to (default: acc_default)")
    ] = None,
    admin: Annotated[bool, typer.Option("--admin", help="An admin token (of the admin account, acc_admin)")] = False,
    database_url: DatabaseOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Make a new API token and print it (the only time it is shown)."""
    from inferd.accounts.models import ADMIN_ACCOUNT
    from inferd.accounts.store import AccountStore
    from inferd.accounts.tokens import TokenStore

    if admin and account not in (None, ADMIN_ACCOUNT):
        typer.echo("error: --admin makes a token of the admin account; leave out --account", err=True)
        raise typer.Exit(2)

    async def work(db):
        tokens = TokenStore(db)
        if account is not None:
            await AccountStore(db, tokens).get(account)  # NotFound for a mistyped id
        return await tokens.create(name, account_id=account, admin=admin)

    secret, row = _with_db(build_settings(database_url=database_url, data_dir=data_dir), work)
    typer.echo(f"token_id: {row.token_id}\naccount:  {row.account_id}\nname:     {row.name}\ntoken:    {secret}")


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
    typer.echo(f"{'TOKEN ID':<22} {'ACCOUNT':<22} {'NAME':<20} {'ENDS':<6} {'CREATED':<17} {'EXPIRES':<17} REVOKED")
    for row in rows:
        typer.echo(
            f"{row.token_id:<22} {row.account_id:<22} {row.name[:20]:<20} …{row.hint:<5} {_when(row.created_at):<17} "
            f"{_when(row.expires_at):<17} {_when(row.revoked_at)}"
        )


def _when(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M") if moment else ""


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
    from_: Annotated[str, typer.Option("--from", help="First month: YYYY.MM, current, current-N, or unix seconds")] = "current",
    to: Annotated[str | None, typer.Option(help="Last month, same forms (default: the --from month)")] = None,
    account: Annotated[str | None, typer.Option("--account", help="Only this account (default: every account)")] = None,
    token_id: Annotated[str | None, typer.Option("--token-id", help="Only this token's requests")] = None,
    database_url: DatabaseOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """The bill per month: per model and pricing type, requests, units, cost (exact, in dollars)
    and cents, as `GET /payment/usage` gives it."""
    from inferd.accounts.billing import bill, parse_period
    from inferd.catalog.pricing import nano_to_usd

    async def work(db):
        start = parse_period(from_, param="from")
        end = parse_period(to, param="to") if to else None
        return await bill(db, start=start, end=end, account_id=account, token_id=token_id)

    out = _with_db(build_settings(database_url=database_url, data_dir=data_dir), work)
    for month in out["months"]:
        typer.echo(f"{month['period']}")
        typer.echo(f"  {'MODEL':<44} {'PRICING':<12} {'REQUESTS':>8} {'UNITS':>12} {'COST $':>14} {'CENTS':>7}")
        for item in month["items"]:
            typer.echo(
                f"  {item['model']['model_name'][:44]:<44} {item['pricing_type'][:12]:<12} {item['requests']:>8} "
                f"{item['units']:>12} {nano_to_usd(item['cost_nano_usd']):>14.9f} {item['cost']:>7}"
            )
        typer.echo(f"  {'total':<44} {'':<12} {'':>8} {'':>12} {nano_to_usd(month['total_cost_nano_usd']):>14.9f} "
                   f"{month['total_cost']:>7}")


@accounts_app.command("create")
def accounts_create(
    name: Annotated[str, typer.Argument(help="A name for the account (a person, a team, a service)")],
    rate_limit: Annotated[int | None, typer.Option(help="Concurrent requests per model (default: the server's)")] = None,
    tpm_rate_limit: Annotated[int | None, typer.Option(help="Tokens per minute (default: the server's)")] = None,
    database_url: DatabaseOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Make an account and its first API token, and print both (the token only this once)."""
    from inferd.accounts.store import AccountStore
    from inferd.accounts.tokens import TokenStore

    made = _with_db(build_settings(database_url=database_url, data_dir=data_dir),
                    lambda db: AccountStore(db, TokenStore(db)).create(name, rate_limit=rate_limit,
                                                                       tpm_rate_limit=tpm_rate_limit))
    typer.echo(f"account:  {made.account.account_id}\nname:     {made.account.name}\n"
               f"token_id: {made.token_row.token_id}\ntoken:    {made.token}")


@accounts_app.command("list")
def accounts_list(database_url: DatabaseOpt = None, data_dir: DataDirOpt = None) -> None:
    """List accounts: id, name, active tokens, limits, and whether each is disabled."""
    from inferd.accounts.store import AccountStore
    from inferd.accounts.tokens import TokenStore

    rows = _with_db(build_settings(database_url=database_url, data_dir=data_dir),
                    lambda db: AccountStore(db, TokenStore(db)).list())
    typer.echo(f"{'ACCOUNT':<22} {'NAME':<24} {'TOKENS':>6} {'RATE':>6} {'TPM':>9} {'CREATED':<17} DISABLED")
    for account, active in rows:
        name = account.name[:24] + (" (admin)" if account.is_admin else "")
        typer.echo(
            f"{account.account_id:<22} {name:<24} {active:>6} {account.rate_limit or '-':>6} "
            f"{account.tpm_rate_limit or '-':>9} {_when(account.created_at):<17} {_when(account.disabled_at)}"
        )


@accounts_app.command("disable")
def accounts_disable(
    account_id: Annotated[str, typer.Argument(help="The account id (acc_...)")],
    enable: Annotated[bool, typer.Option("--enable", help="Enable it again instead")] = False,
    database_url: DatabaseOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Disable an account: its tokens stop working (within a few seconds on a running server);
    its usage, its bill, stays."""
    from inferd.accounts.store import AccountStore
    from inferd.accounts.tokens import TokenStore

    _with_db(build_settings(database_url=database_url, data_dir=data_dir),
             lambda db: AccountStore(db, TokenStore(db)).update(account_id, disabled=not enable))
    typer.echo(f"{'enabled' if enable else 'disabled'} {account_id}")


def main() -> None:
    import sys

    sys.argv[1:] = ray_address_argument(sys.argv[1:])
    app()


def ray_address_argument(args: list[str]) -> list[str]:
    """``--ray ADDRESS`` (the issue's and Ray's own spelling) -> ``--ray-address ADDRESS``;
    ``--ray`` alone stays the flag."""
    out = list(args)
    for i, arg in enumerate(out[:-1]):
        if arg == "--ray" and not out[i + 1].startswith("-"):
            out[i] = "--ray-address"
            break
    return out


if __name__ == "__main__":
    main()
