"""A replica's engine metrics, in Ray's metrics system (Ray's dashboard and its Prometheus
endpoint on every node): batch sizes and times, queue depth and running sequences per model,
with the replica's id. The ingress's /metrics has the requests, tokens and
``inferd_replica_calls_total`` by replica."""

from __future__ import annotations

_BATCH_BOUNDARIES = [1, 2, 4, 8, 16, 32, 64, 128, 256]
_SECONDS_BOUNDARIES = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30]


class RayMetrics:
    """An EngineObserver for an engine in a Ray Serve replica."""

    def __init__(self, replica: str):
        from ray.util import metrics

        self.tags = {"replica": replica}
        keys = ("model", "replica")
        self.batch_size = metrics.Histogram("inferd_batch_size", "Inputs per forward pass",
                                            boundaries=_BATCH_BOUNDARIES, tag_keys=keys)
        self.batch_seconds = metrics.Histogram("inferd_batch_duration_seconds", "Forward pass time",
                                               boundaries=_SECONDS_BOUNDARIES, tag_keys=keys)
        self.queue = metrics.Gauge("inferd_queue_depth", "Inputs queued per model", tag_keys=keys)
        self.running_seqs = metrics.Gauge("inferd_running_sequences", "Sequences generating now", tag_keys=keys)
        self.batches = 0
        self.inputs = 0

    def batch_done(self, model: str, size: int, tokens: int, seconds: float) -> None:
        tags = {**self.tags, "model": model}
        self.batch_size.observe(size, tags=tags)
        self.batch_seconds.observe(seconds, tags=tags)
        self.batches += 1
        self.inputs += size

    def queue_depth(self, model: str, depth: int) -> None:
        self.queue.set(depth, tags={**self.tags, "model": model})

    def running(self, model: str, sequences: int) -> None:
        self.running_seqs.set(sequences, tags={**self.tags, "model": model})

    def replica_answered(self, model: str, replica: str) -> None:
        pass
