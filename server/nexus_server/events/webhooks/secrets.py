"""Webhook signing secrets at rest: sealed with their own key, re-sealed after a rotation of
NEXUS_SECRET_KEY (as identity's secrets are: identity/resealing.py)."""

from __future__ import annotations

import logging

from cryptography.exceptions import InvalidTag

from nexus_server.common.sealing import Sealer
from nexus_server.config import Settings
from nexus_server.db.uow import Database
from nexus_server.events.webhooks import store

log = logging.getLogger("nexus.webhooks")
PURPOSE = "webhook-secrets"


def sealer(settings: Settings) -> Sealer:
    return Sealer(settings.secret_key, PURPOSE, previous=settings.secret_key_previous)


async def reseal_all(db: Database, sealing: Sealer) -> int:
    """Re-seal every secret the previous key sealed, by compare-and-set on the old bytes
    (a rotation meanwhile is left as it is); returns how many were."""
    async with db.unit_of_work(readonly=True) as uow:
        rows = await store.all_sealed_secrets(uow.session)
    count = 0
    for endpoint_id, current, previous in rows:
        for column, sealed in (("secret", current), ("previous_secret", previous)):
            if not sealed:
                continue
            try:
                fresh = sealing.reseal(sealed)
            except InvalidTag:
                log.error("a webhook secret neither NEXUS_SECRET_KEY nor NEXUS_SECRET_KEY_PREVIOUS opens")
                continue
            if fresh is not None:
                async with db.unit_of_work() as uow:
                    await store.replace_sealed(uow.session, endpoint_id, column, sealed, fresh)
                count += 1
    return count
