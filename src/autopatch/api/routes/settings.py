"""``/settings`` (admin): what may change while AutoPatch runs, the same steps as ``autopatch settings``."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field

from autopatch.admin_settings import set_setting, settings_view, unset_setting
from autopatch.api.deps import AuditTrail, StoreDep, audited, get_settings, require
from autopatch.domain.access import Role

router = APIRouter(prefix="/settings", tags=["settings"])


class SettingItem(BaseModel):
    key: str
    value: str = Field(description="the value in effect; secrets masked")
    source: str = Field(description="environment (wins), stored, or default")
    description: str


class SettingList(BaseModel):
    items: list[SettingItem]


class SettingValue(BaseModel):
    model_config = ConfigDict(extra="forbid")

    value: str = Field(max_length=4000, description="checked like its AUTOPATCH_ variable")


@router.get("", response_model=SettingList, dependencies=[Depends(require(Role.ADMIN))])
def list_settings(request: Request, store: StoreDep) -> dict[str, Any]:
    """Each setting an admin may change, its value now and where that value comes from."""
    return {"items": settings_view(get_settings(request), store)}


@router.put("/{key}", response_model=SettingItem)
def put_setting(
    key: str,
    body: SettingValue,
    request: Request,
    store: StoreDep,
    trail: Annotated[AuditTrail, Depends(audited("settings.set", Role.ADMIN))],
) -> dict[str, Any]:
    """Store a value (422 naming the rule when it is refused); it applies to the next run or import."""
    return set_setting(get_settings(request), store, key, body.value)


@router.delete("/{key}", response_model=SettingItem)
def delete_setting(
    key: str,
    request: Request,
    store: StoreDep,
    trail: Annotated[AuditTrail, Depends(audited("settings.unset", Role.ADMIN))],
) -> dict[str, Any]:
    """Forget the stored value: back to the environment's or the default."""
    return unset_setting(get_settings(request), store, key)
