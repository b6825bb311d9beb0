"""Infinity's wire models (its /embeddings, /models and /health)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, StrictInt, StrictStr

from inferd.protocol.base import WireModel


class InfinityEmbeddingRequest(WireModel):
    input: StrictStr | list[StrictStr]
    model: StrictStr = "default/not-specified"
    encoding_format: Literal["float", "base64"] | None = None
    modality: Literal["text", "image", "audio"] = "text"
    dimensions: Annotated[StrictInt, Field(ge=1)] | None = None
    user: str | None = None


class InfinityModel(WireModel):
    id: str
    object: Literal["model"] = "model"
    owned_by: str = "infinity"
    created: int
    backend: str
    capabilities: list[str]
    stats: dict = Field(default_factory=dict)


class InfinityModelList(WireModel):
    object: Literal["list"] = "list"
    data: list[InfinityModel]


class InfinityRerankRequest(WireModel):
    query: StrictStr
    documents: list[StrictStr]
    model: StrictStr = "default/not-specified"
    top_n: Annotated[StrictInt, Field(ge=1)] | None = None
    return_documents: bool = False
    raw_scores: bool = Field(False, description="the model's raw scores (logits, cosines) instead of [0, 1]")
    user: str | None = None


class InfinityRerankResult(WireModel):
    relevance_score: float
    index: int
    document: str | None = None


class InfinityRerankResponse(WireModel):
    object: Literal["rerank"] = "rerank"
    results: list[InfinityRerankResult]
    model: str
    usage: dict[str, int]
    id: str
    created: int
