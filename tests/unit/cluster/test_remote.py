"""How a failed call to a replica reaches the client (no Ray started)."""

from __future__ import annotations

import pytest

from inferd.errors import EngineError, ModelUnavailable


def test_a_replicas_own_error_is_the_clients_and_others_are_engine_errors():
    pytest.importorskip("ray.serve")
    from inferd.cluster.remote import Remote

    remote = Remote(("deployment", "app"), "m", 5.0, observer=None)
    # a streaming call raises the replica's error as it is: the same status and Retry-After
    error = ModelUnavailable("model m is unavailable: the vLLM engine process died", retry_after=2)
    assert remote._error(error, retried=False) is error
    other = remote._error(ValueError("what Ray said"), retried=False)
    assert isinstance(other, EngineError) and "what Ray said" in other.message
