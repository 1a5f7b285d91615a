"""The whole data model: importing this module registers every table in its metadata."""

from __future__ import annotations

from sqlalchemy import MetaData

from tradebase.accounts import models as _accounts  # noqa: F401
from tradebase.alerts import models as _alerts  # noqa: F401
from tradebase.audit import models as _audit  # noqa: F401
from tradebase.brokers import models as _brokers  # noqa: F401
from tradebase.calendars import models as _calendars  # noqa: F401
from tradebase.core.db import Database
from tradebase.core.models import Base, CredentialsBase
from tradebase.credentials import models as _credentials  # noqa: F401
from tradebase.events import models as _events  # noqa: F401
from tradebase.llm import models as _llm  # noqa: F401
from tradebase.marketdata import models as _marketdata  # noqa: F401
from tradebase.metrics import models as _metrics  # noqa: F401
from tradebase.mirroring import models as _mirroring  # noqa: F401
from tradebase.ops import models as _ops  # noqa: F401
from tradebase.orders import models as _orders  # noqa: F401
from tradebase.portfolios import models as _portfolios  # noqa: F401
from tradebase.predictions import models as _predictions  # noqa: F401
from tradebase.signals import models as _signals  # noqa: F401
from tradebase.strategies import models as _strategies  # noqa: F401

main_metadata: MetaData = Base.metadata
credentials_metadata: MetaData = CredentialsBase.metadata


def metadata_for(database: Database) -> MetaData:
    """The metadata of *database*'s tables."""
    return main_metadata if database is Database.main else credentials_metadata
