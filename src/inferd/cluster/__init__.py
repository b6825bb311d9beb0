"""inferd on Ray Serve (``inferd serve --ray``): the same API in front of many machines.

* ``serve.py`` deploys one Serve application per catalog version, whose replicas each hold that
  model's engine, and serves HTTP with the FastAPI app of one process (every route and dialect
  unchanged, its accounts, limits and usage in the shared database): from the ``inferd``
  process, or as an ingress deployment behind Serve's proxy.
* ``replica.py`` is a model's replica: the engine built and started as in one process.
* ``remote.py`` is what the ingress's serving layer sees of a model: an engine with the same
  interface whose calls go through the deployment's handle (Ray's failures become inferd's
  errors: a replica that dies is retried once, then 503).

In one process the pool builds engines with ``engine.pool.build_engine``; on Ray Serve the
ingress's pool builds them with ``remote.remote_engines``: the rest of the server is the same.
"""
