"""Viber through an HTTP business-messages batch API (wire format: providers/http_batch.py).

A recipient who is not a Viber user is answered ``rejected`` with the error
``not_viber_user``: a permanent outcome, so the fallback chain moves on to SMS.
"""

from __future__ import annotations

from providers.base import Outbound, ViberContent
from providers.http_batch import HttpBatchProvider, WireMessage

NOT_VIBER_USER = "not_viber_user"


class ViberHttpProvider(HttpBatchProvider):
    """Sends Viber messages (text, optional button and image) in batches of up to ``max_batch``."""

    def __init__(
        self,
        *,
        base_url: str,
        token: str,
        max_batch: int = 500,
        timeout: float = 15.0,
        pool_size: int = 32,
    ) -> None:
        super().__init__(
            name="viber_http",
            channel="viber",
            base_url=base_url,
            token=token,
            max_batch=max_batch,
            timeout=timeout,
            pool_size=pool_size,
        )

    def to_wire(self, message: Outbound) -> WireMessage | None:
        content = message.content
        if not isinstance(content, ViberContent):
            return None
        return WireMessage(
            message.message_id,
            message.address,
            content.text,
            button_text=content.button_text,
            button_url=content.button_url,
            image_url=content.image_url,
        )
