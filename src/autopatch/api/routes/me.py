"""``/me``: who the token is and its role, so a client (the dashboard) hides the controls it may not use.

The server still enforces every role; this only spares a viewer buttons that would answer 403.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from pydantic import BaseModel

from autopatch.api.deps import require
from autopatch.domain.access import Principal, Role

router = APIRouter(tags=["tokens and audit"])


class Me(BaseModel):
    name: str
    role: str


@router.get("/me", response_model=Me)
async def me(principal: Annotated[Principal, Depends(require(Role.VIEWER))]) -> Me:
    """The calling token's name and role (any valid token; 401 otherwise)."""
    return Me(name=principal.name, role=str(principal.role))
