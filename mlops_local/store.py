"""The MLflow store behind the server: a quick check that a PostgreSQL store answers.

MLflow retries a database it cannot reach for about two minutes before it fails with a traceback;
one connection attempt with a short timeout says the same in one line within seconds.
"""

from __future__ import annotations

import importlib.util

from mlops_local.errors import ServiceUnavailable, UserError, first_line
from mlops_local.settings import Settings

CONNECT_TIMEOUT_S = 5


def check_postgres(settings: Settings) -> None:
    """Raise UserError/ServiceUnavailable (one line, password masked) when MLOPS_BACKEND_STORE_URI's
    PostgreSQL cannot be used: driver missing, server not answering, login refused."""
    if settings.store_is_sqlite:
        return
    if importlib.util.find_spec("psycopg") is None:
        raise UserError(f"MLOPS_BACKEND_STORE_URI={settings.store_label} needs PostgreSQL's driver: "
                        "pip install 'mlops-local[postgres]' (bin/start installs it when the setting is set)")
    import sqlalchemy
    from sqlalchemy.pool import NullPool

    engine = sqlalchemy.create_engine(settings.backend_store_uri, poolclass=NullPool,
                                      connect_args={"connect_timeout": CONNECT_TIMEOUT_S})
    try:
        with engine.connect():
            pass
    except sqlalchemy.exc.SQLAlchemyError as exc:
        cause = first_line(getattr(exc, "orig", None) or exc)
        raise ServiceUnavailable(f"the PostgreSQL store {settings.store_label} (MLOPS_BACKEND_STORE_URI) "
                                 f"cannot be used: {cause}") from exc
    finally:
        engine.dispose()
