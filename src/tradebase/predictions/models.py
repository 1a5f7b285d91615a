"""ML predictions and how right they were (seed 004 ml_predictions)."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any

from sqlalchemy import ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from tradebase.core.ddl import BigID, ck, ck_in
from tradebase.core.models import Base, created_at_column
from tradebase.core.time import utc_now


class PredictedDirection(StrEnum):
    up = "up"
    down = "down"
    neutral = "neutral"


class MlPrediction(Base):
    __tablename__ = "ml_predictions"

    id: Mapped[int] = mapped_column(BigID, primary_key=True)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    model_name: Mapped[str] = mapped_column(String(100))
    model_version: Mapped[str | None] = mapped_column(String(50))
    symbol: Mapped[str] = mapped_column(String(50))
    exchange: Mapped[str | None] = mapped_column(String(50))
    predicted_price: Mapped[Decimal | None]
    predicted_direction: Mapped[str | None] = mapped_column(String(10))
    confidence: Mapped[Decimal | None]  # 0..1
    feature_importance: Mapped[dict[str, Any] | None]
    predicted_at: Mapped[datetime] = mapped_column(default=utc_now)
    prediction_horizon: Mapped[int | None]  # minutes ahead
    reference_price: Mapped[Decimal | None]  # the price when predicted, for direction scoring
    actual_price: Mapped[Decimal | None]  # backfilled
    prediction_error: Mapped[Decimal | None]  # |predicted - actual|
    was_correct: Mapped[bool | None]
    evaluated_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = created_at_column()

    __table_args__ = (
        Index("idx_prediction_symbol_time", "symbol", "predicted_at"),
        Index("idx_prediction_model", "model_name"),
        Index("idx_ml_predictions_predicted_at", "predicted_at"),
        Index("idx_ml_predictions_model_time", "model_name", "predicted_at"),
        Index("idx_ml_predictions_user", "user_id"),
        ck_in(
            "predicted_direction", "predicted_direction", list(PredictedDirection), nullable=True
        ),
        ck("confidence_range", "{num:confidence} >= 0 AND {num:confidence} <= 1"),
        ck("horizon_positive", "prediction_horizon > 0"),
        ck("error_nonnegative", "{num:prediction_error} >= 0"),
    )
