"""One Settings object, built once (from flags and ``INFERD_*`` variables) and passed down.

Nothing in inferd reads the environment anywhere else, and nothing reads it at import.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="INFERD_", extra="ignore")

    # --- network
    host: str = "127.0.0.1"
    port: int = 8000
    keep_alive_s: int = Field(
        75, ge=1, description="how long an idle keep-alive connection stays open (uvicorn's 5 s closed busy "
        "clients' idle pool connections under load, and every reconnect cost the client CPU)"
    )

    # --- where things live
    data_dir: Path = Field(Path(".inferd"), description="SQLite file, caches and converted models")
    catalog: Path | None = Field(None, description="catalog YAML; the embedded default when unset")
    database_url: str | None = Field(None, description="any SQLAlchemy URL; SQLite in data_dir when unset")
    cache_dir: Path | None = Field(None, description="converted checkpoints (GGUF -> transformers); data_dir/cache when unset")

    # --- accounts
    auth: bool = Field(True, description="require a Bearer token on inference routes")
    admin_token: str | None = Field(None, description="make this the admin token on first start")
    token_cache_ttl_s: float = Field(
        5.0, ge=0, description="how long a verified token is trusted before the database is asked again (a token "
        "revoked or an account disabled on another process stops working within this)"
    )
    rate_limit: int = Field(
        200, ge=1, description="concurrent requests per model per account, unless the account or token says less "
        "(DeepInfra's default)"
    )
    tpm_rate_limit: int | None = Field(None, ge=1, description="tokens per minute per account (unset: no limit)")
    limits: Literal["auto", "local", "shared"] = Field(
        "auto", description="where concurrency limits are counted: 'local' (this process's memory: exact for one "
        "process), 'shared' (the database: exact for every process on it); 'auto': local on SQLite, shared otherwise"
    )
    limit_lease_s: float = Field(
        15.0, gt=0, description="with shared limits, a process that dies frees its slots within this"
    )
    scoped_token_secret: str | None = Field(
        None, min_length=32, description="the key scoped tokens (jwt:...) are signed with; unset: one made on first "
        "start and kept in the database, so every process sharing it agrees"
    )
    usage_flush_interval_s: float = 0.5
    usage_flush_batch: int = 512

    # --- API surfaces
    infinity_prefix: str = Field("", description="path prefix of Infinity's API ('' = the root)")

    # --- input policy
    too_long: Literal["truncate", "error"] = Field(
        "truncate", description="inputs longer than the model's context: truncate them, or answer 413"
    )
    max_inputs_per_request: int = Field(
        2048, ge=1, description="texts to embed, documents to rerank or prompts to complete in one request"
    )
    max_body_bytes: int = Field(32 << 20, ge=1024, description="largest request body; past it, 413")
    max_messages: int = Field(2048, ge=1, description="chat messages in one request")
    max_audio_bytes: int = Field(
        512 << 20, ge=1024, description="largest audio upload (spooled to disk as it arrives); past it, 413"
    )
    max_audio_seconds: float = Field(4 * 3600, gt=0, description="longest audio to transcribe; past it, 413")
    max_speech_characters: int = Field(4096, ge=1, description="longest text to speak, in characters; past it, 413")
    max_images_per_request: int = Field(4, ge=1, description="images one request may ask for (n, num_images)")
    max_image_side: int = Field(2048, ge=64, description="widest and tallest image to generate, in pixels")
    max_image_pixels: int = Field(
        4096 * 4096, ge=64 * 64, description="most pixels in an uploaded image (checked from its header, before "
        "it is decoded); past it, 413"
    )
    fetch_image_urls: bool = Field(
        False, description="fetch images given as http(s) URLs (off: images come as uploads, data URLs or base64; "
        "on, the server fetches what a client names: allow it only where that is safe)"
    )
    image_fetch_timeout_s: float = Field(10.0, gt=0, description="longest an image URL may take to fetch")
    requests_per_turn: int = Field(
        8, ge=1, description="requests that start their work in one turn of the event loop; the rest wait a turn "
        "(a burst cannot stall /health or running streams)"
    )
    template_timeout_s: float = Field(
        5.0, gt=0, description="longest a chat template may take to render and tokenise; past it, 400"
    )

    # --- who may see what
    metrics_auth: bool = Field(False, description="/metrics answers only to admin tokens")
    docs_auth: bool = Field(False, description="/docs, /redoc and /openapi.json answer only to admin tokens")

    # --- engine
    batch_wait_ms: float = Field(3.0, description="longest a batch waits to fill under load")
    engine_workers: int = Field(2, ge=1, description="forward passes an encoder model runs at once")
    torch_threads: int | None = Field(
        None, description="intra-op threads per forward pass (default: the cores divided among the workers)"
    )

    def threads_per_worker(self) -> int:
        return self.torch_threads or max(1, (os.cpu_count() or 1) // self.engine_workers)

    # --- deployments (POST /deploy/llm, /deploy/hf/: models added while the server runs)
    deploy_paths: list[Path] = Field(
        default_factory=list, description="local directories deployments may load weights from (a `path` outside "
        "them is refused); JSON list in INFERD_DEPLOY_PATHS"
    )
    deploy_from_hub: bool = Field(True, description="deployments may name Hugging Face repositories (downloaded "
                                  "to the hub's cache)")
    deploy_llm_backend: Literal["vllm", "transformers"] = Field(
        "vllm", description="the runtime of POST /deploy/llm unless its extra_args.backend says"
    )
    deploy_memory_gib: float | None = Field(
        None, gt=0, description="memory all deployments together may take (estimated before each loads); unset: "
        "whatever the machine has free"
    )
    deploy_max_download_gib: float = Field(
        50.0, gt=0, description="largest hub repository a deployment downloads (by the hub's file sizes)"
    )
    memory_reserve_gib: float = Field(1.0, ge=0, description="memory a deployment must leave free for the server")
    max_deployments_per_account: int = Field(8, ge=0, description="live deployments one account may have")
    deploy_sync_s: float = Field(
        5.0, ge=0, description="how often this process follows what other processes on its database did to "
        "deployments (made, stopped, started, changed, deleted there) and LoRA adapters (made, changed, "
        "deleted); 0: never (one process)"
    )

    # --- Ray Serve (inferd serve --ray)
    ray_address: str | None = Field(
        None, description="the Ray cluster to run on (`ray start --head` prints it; 'auto' finds the local one); "
        "unset with --ray: a local Ray started for this server"
    )
    ray_ingress: Literal["local", "serve"] = Field(
        "local", description="where HTTP is served with --ray: 'local', this process (uvicorn, one hop to a model's "
        "replicas; run one per machine behind a load balancer); 'serve', an ingress deployment behind Ray Serve's "
        "proxy (replicated by Ray; a hop more: docs/scale-out.md has the figures)"
    )
    ray_ingress_replicas: int = Field(
        1, ge=1, description="replicas of the HTTP ingress with ray_ingress 'serve' (more than one: limits are "
        "counted in the database; on a cluster of several machines that must be PostgreSQL)"
    )
    ray_request_timeout_s: float = Field(
        600.0, gt=0, description="longest a call to a model's replicas may take (a replica that never comes up: 503)"
    )
    ray_direct_calls: bool = Field(
        True, description="call model replicas over their gRPC servers with the router in the ingress's event loop "
        "(Ray Serve's throughput-optimised handles); off: Ray tasks through the object store"
    )
    ray_feeds: bool = Field(
        True, description="an LLM's replicas send the deltas of this process's requests in one stream per replica "
        "(a batch per engine step) rather than on each request's call: less CPU per token (cluster/feeds.py)"
    )
    ray_dashboard: bool = Field(True, description="start Ray's dashboard with a local Ray (port 8265)")

    # --- logging
    log_level: str = "INFO"
    log_format: Literal["text", "json"] = "text"
    access_log: bool = False

    def resolved_cache_dir(self) -> Path:
        return self.cache_dir or self.data_dir / "cache"

    def shared_limits(self) -> bool:
        if self.limits == "auto":
            # several ingress replicas are several processes on one database, whatever it is
            several = self.ray_ingress == "serve" and self.ray_ingress_replicas > 1
            return several or not self.resolved_database_url().startswith("sqlite")
        return self.limits == "shared"

    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'inferd.db').as_posix()}"
