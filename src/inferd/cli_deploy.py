"""`inferd deploy ...`: deployments through a running server's API (the server loads the
weights, so the command asks it, as curl would; `--url`, `--token` or INFERD_URL, INFERD_TOKEN)."""

from __future__ import annotations

import json
import time
from typing import Annotated, Any

import typer

deploy_app = typer.Typer(help="Deployments: models added to a running server (docs/deployments.md).",
                         no_args_is_help=True)

UrlOpt = Annotated[str, typer.Option("--url", envvar="INFERD_URL", help="The server [env INFERD_URL]")]
TokenOpt = Annotated[str | None, typer.Option("--token", envvar="INFERD_TOKEN",
                                              help="An API token (admin or the deployment's account) [env INFERD_TOKEN]")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the server's JSON")]
DEFAULT_URL = "http://127.0.0.1:8000"


def _call(method: str, url: str, token: str | None, path: str, body: dict | None = None,
          params: dict | None = None) -> Any:
    import httpx

    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        r = httpx.request(method, url.rstrip("/") + path, json=body, params=params, headers=headers, timeout=60)
    except httpx.HTTPError as exc:
        typer.echo(f"error: cannot reach {url}: {exc}", err=True)
        raise typer.Exit(1) from None
    if r.status_code >= 400:
        try:
            detail = r.json()
            message = detail.get("error") or detail.get("detail") or detail
        except ValueError:
            message = r.text
        typer.echo(f"error ({r.status_code}): {message if isinstance(message, str) else json.dumps(message)}",
                   err=True)
        raise typer.Exit(1)
    return r.json()


def _show(d: dict, as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(d, indent=2))
        return
    line = f"{d['deploy_id']}  {d['model_name']}  {d['task']}  {d['status']}"
    if d.get("fail_reason"):
        line += f"  ({d['fail_reason']})"
    elif d.get("progress"):
        line += f"  ({d['progress'].get('stage')}, {d['progress'].get('seconds')} s)"
    typer.echo(line)


@deploy_app.command("create")
def create(
    model_name: Annotated[str, typer.Argument(help="The name requests will use (`model`)")],
    path: Annotated[str | None, typer.Option(help="A directory under the server's deploy_paths")] = None,
    hf: Annotated[str | None, typer.Option(help="A Hugging Face repository, org/name[@revision]")] = None,
    task: Annotated[str, typer.Option(help="text-generation (POST /deploy/llm) or another task (/deploy/hf/)")]
    = "text-generation",
    backend: Annotated[str | None, typer.Option(help="The runtime (default: the task's, or deploy_llm_backend)")]
    = None,
    max_batch_size: Annotated[int | None, typer.Option(help="Requests (LLM) or inputs batched at once")] = None,
    enable_lora: Annotated[bool, typer.Option("--enable-lora", help="vLLM: serve LoRA adapters on it")] = False,
    wait: Annotated[bool, typer.Option("--wait", help="Wait until it is deployed or failed")] = False,
    url: UrlOpt = DEFAULT_URL,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Deploy a model; it loads in the server while everything else keeps serving."""
    source: dict[str, Any] = {}
    if path:
        source["path"] = path
    if hf:
        repo, _, revision = hf.partition("@")
        source["hf"] = {"repo": repo, **({"revision": revision} if revision else {})}
    body: dict[str, Any] = {"model_name": model_name, **source}
    if max_batch_size:
        body["max_batch_size"] = max_batch_size
    if task == "text-generation" and backend in (None, "vllm", "transformers"):
        extra = {**({"backend": backend} if backend else {}), **({"enable_lora": True} if enable_lora else {})}
        if extra:
            body["extra_args"] = extra
        made = _call("POST", url, token, "/deploy/llm", body)
    else:
        made = _call("POST", url, token, "/deploy/hf/", {**body, "task": task, **({"backend": backend} if backend
                                                                                     else {})})
    if wait:
        made = _wait(url, token, made["deploy_id"])
    _show(made, as_json)
    if made["status"] == "failed":
        raise typer.Exit(1)


def _wait(url: str, token: str | None, deploy_id: str) -> dict:
    while True:
        seen = _call("GET", url, token, f"/deploy/{deploy_id}")
        if seen["status"] not in ("initializing", "deploying"):
            return seen
        time.sleep(1)


@deploy_app.command("list")
def list_(all_: Annotated[bool, typer.Option("--all", help="Every account's (admin tokens)")] = False,
          url: UrlOpt = DEFAULT_URL, token: TokenOpt = None, as_json: JsonOpt = False) -> None:
    """The account's deployments."""
    for d in _call("GET", url, token, "/deploy/list", params={"all": all_}):
        _show(d, as_json)


@deploy_app.command("status")
def status(deploy_id: str, url: UrlOpt = DEFAULT_URL, token: TokenOpt = None, as_json: JsonOpt = False) -> None:
    """One deployment: status, reason, progress."""
    _show(_call("GET", url, token, f"/deploy/{deploy_id}"), as_json)


def _action(verb: str, method: str, suffix: str, help_: str):
    def command(deploy_id: str, url: UrlOpt = DEFAULT_URL, token: TokenOpt = None, as_json: JsonOpt = False) -> None:
        _show(_call(method, url, token, f"/deploy/{deploy_id}{suffix}"), as_json)

    command.__doc__ = help_
    deploy_app.command(verb)(command)


_action("stop", "POST", "/stop", "Unload a deployment, keeping it.")
_action("start", "POST", "/start", "Load a stopped or failed deployment again.")
_action("delete", "DELETE", "", "Unload and delete a deployment (its usage stays in the bill).")


lora_app = typer.Typer(help="LoRA adapters on a running server's base models (docs/deployments.md).",
                       no_args_is_help=True)


def _show_lora(a: dict, as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(a, indent=2))
        return
    line = f"{a['lora_name']}  on {a['base_model']}  {a['status']}"
    typer.echo(line + (f"  ({a['fail_reason']})" if a.get("fail_reason") else ""))


@lora_app.command("create")
def lora_create(
    lora_name: Annotated[str, typer.Argument(help="The name requests will use (also BASE:LORA_NAME)")],
    base: Annotated[str, typer.Option("--base", help="The base model (vLLM with enable_lora)")],
    path: Annotated[str | None, typer.Option(help="A PEFT adapter directory under the server's deploy_paths")]
    = None,
    hf: Annotated[str | None, typer.Option(help="A Hugging Face repository, org/name[@revision]")] = None,
    wait: Annotated[bool, typer.Option("--wait", help="Wait until it is served or failed")] = False,
    url: UrlOpt = DEFAULT_URL,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Make an adapter on a base model; it runs in the base model's batches."""
    body: dict[str, Any] = {"lora_name": lora_name, "base_model": base}
    if path:
        body["path"] = path
    if hf:
        repo, _, revision = hf.partition("@")
        body["hf"] = {"repo": repo, **({"revision": revision} if revision else {})}
    made = _call("POST", url, token, "/v1/lora/create", body)
    while wait and made["status"] == "deploying":
        time.sleep(0.5)
        made = _call("GET", url, token, f"/v1/lora/{lora_name}")
    _show_lora(made, as_json)
    if made["status"] == "failed":
        raise typer.Exit(1)


@lora_app.command("list")
def lora_list(base: Annotated[str | None, typer.Option("--base", help="Only this base model's")] = None,
              url: UrlOpt = DEFAULT_URL, token: TokenOpt = None, as_json: JsonOpt = False) -> None:
    """The adapters the token sees."""
    for a in _call("GET", url, token, f"/v1/model/{base}/loras" if base else "/models/lora/list"):
        _show_lora(a, as_json)


@lora_app.command("status")
def lora_status(lora_name: str, url: UrlOpt = DEFAULT_URL, token: TokenOpt = None, as_json: JsonOpt = False) -> None:
    """One adapter."""
    _show_lora(_call("GET", url, token, f"/v1/lora/{lora_name}"), as_json)


@lora_app.command("delete")
def lora_delete(lora_name: str, url: UrlOpt = DEFAULT_URL, token: TokenOpt = None, as_json: JsonOpt = False) -> None:
    """Unload and delete an adapter."""
    _show_lora(_call("DELETE", url, token, f"/v1/lora/{lora_name}"), as_json)
