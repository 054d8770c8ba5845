"""The notifications outbox and its sender.

`queue_mail` writes the message, sealed, in the caller's transaction, so a mail is sent
if and only if the change that asked for it commits. The sender (a background task on every
replica) claims due rows by compare-and-set, so two replicas never send the same row at
once, and delivers them over SMTP (aiosmtplib) or, with no NEXUS_SMTP_URL, writes them as
`.eml` files under `<var_dir>/mail/` for development.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import logging
from datetime import timedelta
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path
from urllib.parse import unquote, urlparse

import aiosmtplib
from sqlalchemy import insert, select, update

from nexus_server.common import periodic
from nexus_server.common.ids import random_base62
from nexus_server.common.private_files import private_dir, write_private
from nexus_server.common.sealing import Sealer
from nexus_server.db.uow import Database, UnitOfWork
from nexus_server.identity.tables import mail_outbox

log = logging.getLogger("nexus.mail")
_CLAIM_FOR = timedelta(minutes=2)
_MAX_ATTEMPTS = 10


class Mailer:
    def __init__(self, db: Database, sealer: Sealer, *, sender: str, smtp_url: str | None, var_dir: Path):
        self.db = db
        self.sealer = sealer
        self.sender = sender
        self.smtp_url = smtp_url
        self.sink = var_dir / "mail"
        self._wake = asyncio.Event()

    async def queue(self, uow: UnitOfWork, recipient: str, subject: str, body: str) -> None:
        message = EmailMessage()
        message["From"] = self.sender
        message["To"] = recipient
        message["Subject"] = subject
        message["Date"] = formatdate(uow.clock.now().timestamp(), usegmt=True)
        message["Message-ID"] = make_msgid(domain="nexus.localhost")
        message.set_content(body)
        now = uow.clock.now()
        await uow.session.execute(
            insert(mail_outbox).values(
                id="mail_" + random_base62(24),
                recipient=recipient,
                message=self.sealer.seal(bytes(message)),
                create_time=now,
                next_attempt_time=now,
                attempts=0,
            )
        )
        uow.after_commit(self._wake.set)

    async def send_due(self) -> int:
        """Send every due message this replica can claim; returns how many were sent."""
        sent = 0
        async with self.db.unit_of_work(readonly=True) as uow:
            rows = (
                await uow.session.execute(
                    select(mail_outbox.c.id, mail_outbox.c.attempts, mail_outbox.c.next_attempt_time)
                    .where(
                        mail_outbox.c.sent_time.is_(None),
                        mail_outbox.c.next_attempt_time <= uow.clock.now(),
                        mail_outbox.c.attempts < _MAX_ATTEMPTS,
                    )
                    .order_by(mail_outbox.c.next_attempt_time)
                    .limit(50)
                )
            ).all()
        for row in rows:
            message = await self._claim(row.id, row.attempts)
            if message is None:
                continue
            try:
                await self._deliver(row.id, message)
            except Exception as error:
                log.warning(
                    "mail delivery failed; will retry", extra={"mail_id": row.id, "error": str(error)}
                )
                await self._failed(row.id, row.attempts + 1, str(error))
            else:
                await self._sent(row.id)
                sent += 1
        return sent

    async def _claim(self, mail_id: str, attempts: int) -> bytes | None:
        async with self.db.unit_of_work() as uow:
            now = uow.clock.now()
            claimed = await uow.session.execute(
                update(mail_outbox)
                .where(
                    mail_outbox.c.id == mail_id,
                    mail_outbox.c.attempts == attempts,
                    mail_outbox.c.sent_time.is_(None),
                )
                .values(attempts=attempts + 1, next_attempt_time=now + _CLAIM_FOR)
                .returning(mail_outbox.c.message)
            )
            sealed = claimed.scalar_one_or_none()
        return None if sealed is None else self.sealer.open(sealed)

    async def _sent(self, mail_id: str) -> None:
        async with self.db.unit_of_work() as uow:
            # The body held a link with a token; once delivered it is not kept.
            await uow.session.execute(
                update(mail_outbox)
                .where(mail_outbox.c.id == mail_id)
                .values(sent_time=uow.clock.now(), message=b"", last_error=None)
            )

    async def _failed(self, mail_id: str, attempts: int, error: str) -> None:
        async with self.db.unit_of_work() as uow:
            backoff = timedelta(seconds=min(2**attempts, 3600))
            await uow.session.execute(
                update(mail_outbox)
                .where(mail_outbox.c.id == mail_id)
                .values(next_attempt_time=uow.clock.now() + backoff, last_error=error[:500])
            )

    async def _deliver(self, mail_id: str, message: bytes) -> None:
        if self.smtp_url is None:
            await asyncio.to_thread(self._write_eml, mail_id, message)
            return
        url = urlparse(self.smtp_url)
        # A parsed message, so aiosmtplib takes the envelope from its From and To headers.
        parsed = email.message_from_bytes(message, policy=email.policy.default)
        await aiosmtplib.send(
            parsed,
            hostname=url.hostname or "127.0.0.1",
            port=url.port or (465 if url.scheme == "smtps" else 25),
            username=unquote(url.username) if url.username else None,
            password=unquote(url.password) if url.password else None,
            use_tls=url.scheme == "smtps",
            start_tls=None if url.scheme == "smtp" else False,
            timeout=30,
        )

    def _write_eml(self, mail_id: str, message: bytes) -> None:
        # Owner-only: the messages carry reset and verification links. Readers never see half
        # a file (written beside, then renamed).
        private_dir(self.sink)
        write_private(self.sink / f"{mail_id}.eml", message)

    async def run(self, interval: float = 1.0) -> None:
        """Send forever: woken by commits that queue mail, and polling for retries and for
        mail queued on other replicas."""
        await periodic.every("identity.mail", interval, self.send_due, wake=self._wake, logger=log)
