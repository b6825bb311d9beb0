"""Prometheus metrics, in a registry of the app's own (no process-wide globals)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)

CONTENT_TYPE = CONTENT_TYPE_LATEST


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "inferd_http_requests", "HTTP requests by route and status", ["route", "status"], registry=r
        )
        self.latency = Histogram(
            "inferd_http_request_duration_seconds", "HTTP request latency", ["route"],
            buckets=_LATENCY_BUCKETS, registry=r,
        )
        self.model_requests = Counter(
            "inferd_model_requests", "Inference requests by model, task and status",
            ["model", "task", "status"], registry=r,
        )
        self.tokens = Counter("inferd_tokens", "Tokens processed", ["model", "kind"], registry=r)
        self.batch_size = Histogram(
            "inferd_batch_size", "Inputs per forward pass", ["model"], buckets=_BATCH_BUCKETS, registry=r
        )
        self.batch_seconds = Histogram(
            "inferd_batch_duration_seconds", "Forward pass time", ["model"], buckets=_LATENCY_BUCKETS, registry=r
        )
        self.queue = Gauge("inferd_queue_depth", "Inputs queued per model", ["model"], registry=r)
        self.running_seqs = Gauge(
            "inferd_running_sequences", "Sequences generating now per model", ["model"], registry=r
        )
        self.replica_calls = Counter(
            "inferd_replica_calls", "Calls answered by each Ray Serve replica of a model (inferd serve --ray)",
            ["model", "replica"], registry=r,
        )
        self.model_state = Gauge(
            "inferd_model_ready", "1 when the model is ready to serve", ["model", "version"], registry=r
        )

    # EngineObserver
    def batch_done(self, model: str, size: int, tokens: int, seconds: float) -> None:
        self.batch_size.labels(model).observe(size)
        self.batch_seconds.labels(model).observe(seconds)
        self.tokens.labels(model, "batch_padded_input").inc(tokens)

    def queue_depth(self, model: str, depth: int) -> None:
        self.queue.labels(model).set(depth)

    def running(self, model: str, sequences: int) -> None:
        self.running_seqs.labels(model).set(sequences)

    def replica_answered(self, model: str, replica: str) -> None:
        self.replica_calls.labels(model, replica).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
