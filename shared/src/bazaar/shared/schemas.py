"""The base of every request body: unknown fields refused, text the database can store."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

#: Query-string text: PostgreSQL text cannot hold NUL, so it is refused up front (422).
SearchText = Annotated[str, Field(pattern=r"^[^\x00]*$")]


def _contains_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_contains_nul(k) or _contains_nul(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return any(_contains_nul(v) for v in value)
    return False


class InputModel(BaseModel):
    """A request body: extra fields are a 422, and so is a NUL character anywhere in it."""

    model_config = ConfigDict(extra="forbid")

    @field_validator("*", mode="after")
    @classmethod
    def _refuse_nul_characters(cls, value: Any) -> Any:
        if _contains_nul(value):
            raise ValueError("text must not contain NUL (\\u0000) characters")
        return value
