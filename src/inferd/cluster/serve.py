"""inferd as Ray Serve applications (``inferd serve --ray``), and the command that runs them.

Each catalog version served on Ray is its own application with one deployment, ``ModelReplica``
(replicas and autoscaling from the catalog's ``scaling``: DeepInfra's ``min_instances`` /
``max_instances``). HTTP is served by the FastAPI app of one process (``create_app``: every
route, dialect, token, limit and bill) whose pool builds remote engines: in this process
(``ray_ingress=local``, the default: uvicorn on ``--host``/``--port``, no Serve proxy), or as an
ingress deployment behind Serve's proxy (``ray_ingress=serve``).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import signal
import threading
import time
from typing import Any

from inferd.backends.vllm import tensor_parallel_size
from inferd.catalog import Catalog, ModelRef, Scaling
from inferd.cluster.remote import RAY_TASKS, remote_engines
from inferd.cluster.replica import ModelReplica
from inferd.settings import Settings

log = logging.getLogger(__name__)

APP = "inferd"
INGRESS = "ingress"
# Serve runs a replica's methods on its own event loop in one thread (the engine's loops are
# there too), not on a second loop in another thread: a call costs a cross-thread hand-off less
# (64 clients x 1 text: 1.2x the calls per second of the default, measured side by side)
# The most one call over a replica's gRPC server (the ingress's direct calls) carries each way:
# Ray Serve's default, 4 MiB, is less than a large vocabulary's tokenizer (Qwen2.5's pickles to
# 10 MB: the replica's description of its model) or an audio upload. Read by Serve's processes
# (the replicas, the ingress) when they import it.
GRPC_ENV = {"RAY_SERVE_REPLICA_GRPC_MAX_MESSAGE_LENGTH": str(1 << 30)}
REPLICA_ENV = {"RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "0", **GRPC_ENV}
NOMINAL_CPUS = 0.1  # what a replica without scaling.num_cpus asks Ray for: a catalog of 20 shares 2 cores


def deployment_name(ref: ModelRef) -> str:
    """A Serve deployment name for a catalog version (made safe, and unique by the hash of its key)."""
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", ref.key)[:80]
    return f"model-{safe}-{hashlib.sha256(ref.key.encode()).hexdigest()[:8]}"


def replica_settings(settings: Settings, scaling: Scaling) -> Settings:
    """A replica's settings: paths made absolute (a replica runs in Ray's working directory);
    with ``num_cpus`` set, its threads follow it (1 CPU: one forward pass on one thread)."""
    update: dict[str, Any] = {"data_dir": settings.data_dir.resolve()}
    if settings.catalog is not None:
        update["catalog"] = settings.catalog.resolve()
    if settings.cache_dir is not None:
        update["cache_dir"] = settings.cache_dir.resolve()
    if scaling.num_cpus is not None:
        cpus = max(1, int(scaling.num_cpus))
        workers = min(settings.engine_workers, cpus)
        update |= {"engine_workers": workers, "torch_threads": max(1, cpus // workers)}
    return settings.model_copy(update=update)


def deployment_options(ref: ModelRef) -> dict[str, Any]:
    scaling, limits = ref.spec.scaling, ref.spec.limits
    options: dict[str, Any] = {
        "name": deployment_name(ref),
        # the engine queues and batches (and answers 429 past its queue): Serve hands it everything
        "max_ongoing_requests": limits.queue_size + limits.max_batch_size,
        "ray_actor_options": {"num_cpus": scaling.num_cpus or NOMINAL_CPUS, "num_gpus": replica_gpus(ref),
                              "runtime_env": {"env_vars": REPLICA_ENV}},
        "health_check_period_s": 2.0,
        "health_check_timeout_s": 30.0,
        "graceful_shutdown_timeout_s": 10.0,
        "logging_config": {"enable_access_log": False},  # a log line per call: the ingress logs requests
    }
    if scaling.min_instances == scaling.max_instances:
        options["num_replicas"] = scaling.min_instances
    else:
        options["autoscaling_config"] = {
            "min_replicas": scaling.min_instances,
            "max_replicas": scaling.max_instances,
            "initial_replicas": scaling.min_instances,
            "target_ongoing_requests": scaling.target_ongoing_requests or limits.max_batch_size,
            "upscale_delay_s": scaling.upscale_delay_s,
            "downscale_delay_s": scaling.downscale_delay_s,
            "metrics_interval_s": 1.0,
            "look_back_period_s": 5.0,
        }
    return options


def replica_gpus(ref: ModelRef) -> float:
    """The GPUs a replica asks Ray for: ``scaling.num_gpus``, and on GPUs at least one per shard
    of a vLLM model split with ``tensor_parallel_size`` (vLLM's shards are processes of the
    replica, on the GPUs Ray gives it: ``CUDA_VISIBLE_DEVICES``). On CPUs (``num_gpus`` 0) the
    shards share the replica's cores."""
    gpus = ref.spec.scaling.num_gpus
    if gpus and ref.spec.backend == "vllm":
        return max(gpus, tensor_parallel_size(dict(ref.spec.options)))
    return gpus


def model_app_name(ref: ModelRef) -> str:
    """Each model is its own Serve application (added and removed alone, issue 17's deployments)."""
    return f"{APP}-{deployment_name(ref)}"


class Ingress:
    """The HTTP ingress as a Serve deployment (``--ray-ingress serve``): the FastAPI app of one
    process behind Serve's proxy, its models in their applications."""

    def __init__(self, settings: Settings, catalog: Catalog, models: dict[str, tuple[str, str]]):
        from inferd.api import create_app
        from inferd.observability.logs import configure_logging

        configure_logging(settings.log_level, settings.log_format)
        # users' deployments get Serve applications of their own: deployed by the ingress replica
        # that makes (or starts) one, attached to by the others as they follow it (deployments.manager)
        deployer = ServeDeployer(settings.ray_request_timeout_s)
        self._inferd_app = create_app(settings, catalog, engines=remote_engines(models, deployer))

    def __serve_build_asgi_app__(self):
        return self._inferd_app


def model_application(ref: ModelRef, settings: Settings):
    """A catalog version's Serve application: its ``ModelReplica`` deployment, bound."""
    from ray import serve

    replica = serve.deployment(ModelReplica).options(**deployment_options(ref))
    return replica.bind(ref, replica_settings(settings, ref.spec.scaling))


class ServeDeployer:
    """Models added while serving (users' deployments, ``deployments.manager``) as Serve
    applications of their own: replicas and autoscaling from their ``min_instances`` /
    ``max_instances`` as the catalog's models get theirs. Deploying waits until the replicas are
    up, or fails with Ray's reason (a replica that cannot load, or no room for one within
    ``ray_request_timeout_s``). An application another ingress (replica) deployed and that is up
    or coming up is attached to, not deployed again: Serve gives an application deployed from
    Python a new version each time, and would restart its replicas."""

    def __init__(self, timeout_s: float):
        self.timeout_s = timeout_s

    def names(self, ref: ModelRef) -> tuple[str, str]:
        return deployment_name(ref), model_app_name(ref)

    def deploy(self, ref: ModelRef, settings: Settings) -> None:
        from ray import serve

        name = model_app_name(ref)
        if _state(serve.status().applications.get(name)) not in ("DEPLOYING", "RUNNING"):
            serve.run_many([serve.RunTarget(model_application(ref, settings), name=name, route_prefix=None)],
                           wait_for_applications_running=False)
        deadline = time.monotonic() + self.timeout_s
        while True:
            status = serve.status().applications.get(name)
            state = _state(status)
            if state == "RUNNING":
                return
            if state in ("DEPLOY_FAILED", "UNHEALTHY"):
                raise RuntimeError(_reason(status))
            if time.monotonic() > deadline:
                raise RuntimeError(f"its replicas were not up within {self.timeout_s:.0f} s "
                                   f"({_reason(status) or 'no room for them on the cluster?'})")
            time.sleep(0.5)

    def undeploy(self, ref: ModelRef) -> None:
        from ray import serve

        serve.delete(model_app_name(ref), _blocking=True)


def _state(status) -> str:
    """An application's state by name ("RUNNING", "DEPLOYING", ...; "" when there is none)."""
    return str(getattr(status, "status", "")).rsplit(".", 1)[-1]


def _reason(status) -> str:
    """What Serve says of an application that is not up (its deployments' messages first)."""
    if status is None:
        return "the application is gone"
    messages = [d.message for d in getattr(status, "deployments", {}).values() if getattr(d, "message", "")]
    message = "; ".join(messages) or getattr(status, "message", "") or ""
    # Serve's message ends with the replica's traceback: its last line (the replica's own reason) first
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    return f"{lines[-1]} ({lines[0]})" if len(lines) > 1 else message


def deploy_models(settings: Settings, catalog: Catalog) -> dict[str, tuple[str, str]]:
    """One Serve application per catalog version served on Ray, deployed together; returns each
    version's (deployment, application) names. Waits until their replicas are up."""
    from ray import serve

    targets, models = [], {}
    for ref in catalog.refs():
        if ref.spec.task not in RAY_TASKS:
            continue
        targets.append(serve.RunTarget(model_application(ref, settings), name=model_app_name(ref), route_prefix=None))
        models[ref.key] = (deployment_name(ref), model_app_name(ref))
    if targets:
        log.info("deploying %d models on Ray Serve (each loads in its replicas)", len(targets))
        serve.run_many(targets)
    return models


def ingress_application(settings: Settings, catalog: Catalog, models: dict[str, tuple[str, str]]):
    from ray import serve

    ingress = serve.deployment(serve.ingress()(Ingress)).options(
        name=INGRESS, num_replicas=settings.ray_ingress_replicas, max_ongoing_requests=100_000,
        ray_actor_options={"num_cpus": NOMINAL_CPUS, "runtime_env": {"env_vars": GRPC_ENV}},
    )
    return ingress.bind(replica_settings(settings, Scaling()), catalog, models)


def run(settings: Settings, catalog: Catalog) -> int:
    """Start (or join) Ray, deploy the models, and serve HTTP until SIGINT/SIGTERM: from this
    process (``ray_ingress=local``: uvicorn, as ``inferd serve``) or from a Serve ingress
    deployment behind Serve's proxy (``ray_ingress=serve``); then take it all down."""
    for name, value in GRPC_ENV.items():  # (this process calls the replicas: before Serve is imported)
        os.environ.setdefault(name, value)
    import ray

    signal.signal(signal.SIGTERM, _interrupt)  # as SIGINT until HTTP serving takes the signals over
    local = settings.ray_address is None
    if local:
        # Ray runs its workers at nice 15 (in favour of the driver): here they are the service (the
        # model replicas) and would lose every core they share with the ingress and the clients
        os.environ.setdefault("RAY_worker_niceness", "0")
        # "local": a Ray of its own even where `ray start` ran on this machine before (Ray would
        # join the cluster it last started, alive or not: ray_current_cluster)
        ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=settings.ray_dashboard,
                 log_to_driver=True)
    else:
        ray.init(address=settings.ray_address, log_to_driver=True)
    from ray import serve

    models: dict[str, tuple[str, str]] = {}
    try:
        if settings.ray_ingress == "local":
            # no Serve proxy: this process serves HTTP (the proxy would take its port, 8000 by default)
            serve.start(proxy_location="Disabled")
        else:
            serve.start(http_options={"host": settings.host, "port": settings.port,
                                      "keep_alive_timeout_s": settings.keep_alive_s})
        models = deploy_models(settings, catalog)
        if settings.ray_ingress == "local":
            _serve_here(settings, catalog, models)
        else:
            _serve_on_ray(settings, catalog, models)
    except KeyboardInterrupt:  # SIGINT while the models were deploying: stopped, as asked
        log.info("interrupted while starting")
    finally:
        log.info("taking the Ray Serve applications down")
        try:
            # bounded: a Ray whose processes already went (a signal to the whole process group)
            # cannot answer; a local Ray ends with ray.shutdown() whatever happened here
            done = threading.Thread(target=_take_down, args=(local, list(models.values())), daemon=True)
            done.start()
            done.join(SHUTDOWN_S)
        finally:
            ray.shutdown()
    return 0


def _serve_here(settings: Settings, catalog: Catalog, models: dict[str, tuple[str, str]]) -> None:
    from inferd.api import create_app
    from inferd.api.app import serve_http

    # users' deployments get Serve applications of their own (from this process, the one ingress)
    deployer = ServeDeployer(settings.ray_request_timeout_s)
    app = create_app(settings, catalog, engines=remote_engines(models, deployer))
    log.info("inferd on Ray Serve (%s): listening on http://%s:%d", settings.ray_address or "a local Ray",
             settings.host, settings.port)
    serve_http(app, settings)


def _serve_on_ray(settings: Settings, catalog: Catalog, models: dict[str, tuple[str, str]]) -> None:
    from ray import serve

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    serve.run(ingress_application(settings, catalog, models), name=APP, route_prefix="/", blocking=False)
    log.info("inferd on Ray Serve (%s): Serve's proxy listening on http://%s:%d", settings.ray_address or "a local Ray",
             settings.host, settings.port)
    stop.wait()


SHUTDOWN_S = 20.0


def _interrupt(*_: Any) -> None:
    raise KeyboardInterrupt


def _take_down(local: bool, models: list[tuple[str, str]]) -> None:
    from ray import serve

    try:
        if local:
            serve.shutdown()
        else:
            for name in [APP, *(app for _, app in models)]:
                serve.delete(name)
    except Exception as exc:  # noqa: BLE001 - going down anyway
        log.warning("Ray Serve did not take the application down cleanly: %s", exc)
