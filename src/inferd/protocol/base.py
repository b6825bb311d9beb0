"""The base every wire model derives from: unknown fields are ignored, as clients send extras."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class WireModel(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)
