"""Re-seal stored secrets after a NEXUS_SECRET_KEY rotation (NEXUS_SECRET_KEY_PREVIOUS set).

Every sealed column is read and each value the previous key sealed is written back sealed
by the current one, by compare-and-set on the old bytes so a value changed meanwhile (a TOTP
re-enrolment, a mail sent) is left as it now is. Replicas may run this at once: each write
is a valid sealing under the current key. Once it has run, the previous key is no longer
needed (docs/operations.md).
"""

from __future__ import annotations

import logging

from cryptography.exceptions import InvalidTag
from sqlalchemy import Column, Table, select, update

from nexus_server.common.sealing import Sealer
from nexus_server.db.uow import Database
from nexus_server.identity.tables import mail_outbox, signing_keys, users

log = logging.getLogger("nexus.identity")


async def reseal_all(db: Database, *, signing: Sealer, totp: Sealer, mail: Sealer) -> int:
    """Re-seal every stored value the previous key sealed; returns how many were."""
    columns: list[tuple[Table, Column[bytes], Column[str], Sealer]] = [
        (signing_keys, signing_keys.c.private_key, signing_keys.c.kid, signing),
        (users, users.c.totp_secret, users.c.id, totp),
        (users, users.c.totp_pending_secret, users.c.id, totp),
        (mail_outbox, mail_outbox.c.message, mail_outbox.c.id, mail),
    ]
    count = unopened = 0
    for table, column, key, sealer in columns:
        async with db.unit_of_work(readonly=True) as uow:
            rows = (await uow.session.execute(select(key, column).where(column.is_not(None)))).all()
        for row_id, sealed in rows:
            if not sealed:  # a sent mail keeps no body
                continue
            try:
                fresh = sealer.reseal(sealed)
            except InvalidTag:  # neither key: left as it is, and said below
                unopened += 1
                continue
            if fresh is None:
                continue
            async with db.unit_of_work() as uow:
                await uow.session.execute(
                    update(table).where(key == row_id, column == sealed).values({column.name: fresh})
                )
            count += 1
    if count:
        log.info("re-sealed secrets with the new NEXUS_SECRET_KEY", extra={"resealed": count})
    if unopened:
        log.error(
            "stored secrets that neither NEXUS_SECRET_KEY nor NEXUS_SECRET_KEY_PREVIOUS opens",
            extra={"unopened": unopened},
        )
    return count
