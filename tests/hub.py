"""A Hugging Face hub stand-in for tests: the routes ``huggingface_hub`` downloads a repository
through (repository info, its file tree, each file's ``resolve/`` URL), serving local
directories as repositories, on 127.0.0.1. ``chunk_delay_s`` slows every file down (a download
that can be watched while it runs)."""

from __future__ import annotations

import asyncio
import hashlib
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import uvicorn
from fastapi import FastAPI, HTTPException, Request, Response
from fastapi.responses import StreamingResponse

CHUNK = 64 << 10


def _sha1(path: Path) -> str:
    return hashlib.sha1(path.read_bytes()).hexdigest()


def hub_app(repos: dict[str, Path], chunk_delay_s: float = 0.0) -> FastAPI:
    app = FastAPI()
    commits = {repo: hashlib.sha1(repo.encode()).hexdigest() for repo in repos}

    def files(repo: str) -> dict[str, Path]:
        if repo not in repos:
            raise HTTPException(404, headers={"X-Error-Code": "RepoNotFound"})
        root = repos[repo]
        return {str(p.relative_to(root)): p for p in sorted(root.rglob("*")) if p.is_file()}

    @app.get("/api/models/{org}/{name}")
    @app.get("/api/models/{org}/{name}/revision/{revision}")
    def info(org: str, name: str, revision: str = "main"):
        repo = f"{org}/{name}"
        listed = files(repo)
        return {"id": repo, "modelId": repo, "sha": commits[repo],
                "siblings": [{"rfilename": path, "size": p.stat().st_size, "blobId": _sha1(p)}
                             for path, p in listed.items()]}

    @app.get("/api/models/{org}/{name}/tree/{revision}")
    def tree(org: str, name: str, revision: str):
        return [{"type": "file", "path": path, "size": p.stat().st_size, "oid": _sha1(p)}
                for path, p in files(f"{org}/{name}").items()]

    @app.api_route("/{org}/{name}/resolve/{revision}/{filename:path}", methods=["GET", "HEAD"])
    async def resolve(org: str, name: str, revision: str, filename: str, request: Request):
        repo = f"{org}/{name}"
        path = files(repo).get(filename)
        if path is None:
            raise HTTPException(404, headers={"X-Error-Code": "EntryNotFound"})
        size = path.stat().st_size
        headers = {"X-Repo-Commit": commits[repo], "ETag": f'"{_sha1(path)}"', "Content-Length": str(size),
                   "Accept-Ranges": "bytes"}
        if request.method == "HEAD":
            return Response(headers=headers)

        async def body():
            with path.open("rb") as f:
                while chunk := f.read(CHUNK):
                    yield chunk
                    if chunk_delay_s:
                        await asyncio.sleep(chunk_delay_s)

        return StreamingResponse(body(), headers=headers, media_type="application/octet-stream")

    return app


@contextmanager
def hub_stand_in(repos: dict[str, Path], chunk_delay_s: float = 0.0) -> Iterator[str]:
    """Serve ``repos`` (``org/name`` -> directory) as a hub; yields its URL (``HF_ENDPOINT``)."""
    config = uvicorn.Config(hub_app(repos, chunk_delay_s), host="127.0.0.1", port=0, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "the hub stand-in did not start"
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
