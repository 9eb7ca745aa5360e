"""``log``: writes each message to the log (the demo's provider; nothing leaves the machine)."""

from __future__ import annotations

import logging

from prosaas_broadcast.providers import Message, Provider

log = logging.getLogger("prosaas.broadcast.log_provider")


class LogProvider(Provider):
    name = "log"
    guarantee = (
        "at least once: a worker killed between writing the line and recording it may write "
        "the line again"
    )

    def send(self, msg: Message) -> str:
        log.info(
            "BROADCAST_MESSAGE broadcast=%s lead=%s channel=%s to=%s body=%r",
            msg.broadcast_id,
            msg.lead_id,
            msg.channel,
            msg.to,
            msg.body,
        )
        return f"log-{msg.idempotency_key}"
