"""SMS through an HTTP gateway's batch API (see providers/http_batch.py for the wire format)."""

from __future__ import annotations

from providers.base import Outbound, SmsContent
from providers.http_batch import HttpBatchProvider, WireMessage


class SmsHttpProvider(HttpBatchProvider):
    """Sends SMS in batches of up to ``max_batch`` to ``POST {base_url}/v1/messages``."""

    def __init__(
        self,
        *,
        base_url: str,
        token: str,
        max_batch: int = 1000,
        timeout: float = 15.0,
        pool_size: int = 32,
    ) -> None:
        super().__init__(
            name="sms_http",
            channel="sms",
            base_url=base_url,
            token=token,
            max_batch=max_batch,
            timeout=timeout,
            pool_size=pool_size,
        )

    def to_wire(self, message: Outbound) -> WireMessage | None:
        content = message.content
        if not isinstance(content, SmsContent):
            return None
        return WireMessage(message.message_id, message.address, content.text)
