"""OpenAI-compatible wire models (served under /v1/openai and /v1)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, StrictInt, StrictStr

from inferd.protocol.base import WireModel

TokenIds = list[Annotated[StrictInt, Field(ge=0)]]
EmbeddingInput = StrictStr | list[StrictStr] | TokenIds | list[TokenIds]


class EmbeddingRequest(WireModel):
    model: StrictStr
    input: EmbeddingInput = Field(description="a string, a list of strings, token ids, or lists of token ids")
    encoding_format: Literal["float", "base64"] | None = Field(
        None, description="float when absent; base64 is little-endian float32"
    )
    dimensions: Annotated[StrictInt, Field(ge=1)] | None = None
    user: str | None = None
    service_tier: str | None = None


class EmbeddingData(WireModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str


class EmbeddingUsage(WireModel):
    prompt_tokens: int
    total_tokens: int
    estimated_cost: float | None = None


class EmbeddingResponse(WireModel):
    object: Literal["list"] = "list"
    data: list[EmbeddingData]
    model: str
    usage: EmbeddingUsage


class ModelCard(WireModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str
    metadata: dict[str, Any]


class ModelList(WireModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class ErrorBody(WireModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(WireModel):
    error: ErrorBody
