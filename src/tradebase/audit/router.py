"""Admin routes of the audit trail."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends

from tradebase.audit.service import audit as audit_service
from tradebase.core.auth import Principal
from tradebase.core.http import SessionDep, require

router = APIRouter(prefix="/api/v1/audit", tags=["audit"])


@router.get("/verify")
def verify_chain(
    principal: Annotated[Principal, Depends(require("read:audit"))], session: SessionDep
) -> dict[str, Any]:
    """Walk the hash chain and name the first entry that was altered, deleted or inserted."""
    result = audit_service.verify(session)
    return {
        "ok": result.ok,
        "checked": result.checked,
        "first_bad_id": result.first_bad_id,
        "problem": result.problem,
        "message": result.message,
    }
