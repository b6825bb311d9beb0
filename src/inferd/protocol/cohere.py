"""Cohere's rerank wire models (POST /v1/rerank and /v2/rerank)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field, StrictStr

from inferd.protocol.base import WireModel


class CohereDocument(WireModel):
    text: StrictStr


Document = StrictStr | CohereDocument


class CohereRerankRequest(WireModel):
    model: StrictStr
    query: StrictStr
    documents: list[Document] = Field(description="strings, or objects with a `text` field")
    top_n: Annotated[int, Field(ge=1)] | None = None
    return_documents: bool = Field(False, description="v1: echo each document as `{\"text\": ...}`")
    max_tokens_per_doc: Annotated[int, Field(ge=1)] | None = Field(None, description="v2: cut documents to this")
    rank_fields: list[str] | None = Field(None, description="accepted and ignored (documents are plain text)")
    max_chunks_per_doc: int | None = Field(None, description="accepted and ignored")


class CohereRerankResult(WireModel):
    index: int
    relevance_score: float
    document: CohereDocument | None = None


class CohereRerankResponse(WireModel):
    id: str
    results: list[CohereRerankResult]
    meta: dict[str, Any]
