"""DeepInfra's native inference wire models (POST /v1/inference/{model})."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, StrictStr

from inferd.protocol.base import WireModel


class InferenceStatus(WireModel):
    status: Literal["queued", "running", "succeeded", "failed"]
    runtime_ms: int
    cost: float = Field(description="USD")
    tokens_input: int = 0
    tokens_generated: int = 0


class EmbeddingsIn(WireModel):
    inputs: list[StrictStr] = Field(description="texts to embed")
    normalize: bool = Field(False, description="L2-normalise the embeddings")
    image: str | None = Field(None, description="an image as a data URL (image models only)")
    webhook: str | None = None


class EmbeddingsOut(WireModel):
    embeddings: list[list[float]]
    input_tokens: int
    request_id: str
    inference_status: InferenceStatus
