"""What both Python receivers share: verification, de-duplication, the background worker.

CODMIR_SECRET is the webhook's `secret` (what X-Codmir-Signature is keyed with, as text);
CODMIR_SIGNING_SECRET is its `signing_secret` (the whsec_... form Standard Webhooks libraries
decode). For a secret codmir generated the two are the same string.
"""

import hashlib
import hmac
import json
import os
import queue
import threading

from standardwebhooks.webhooks import Webhook

SECRET = os.environ.get("CODMIR_SECRET")
SIGNING_SECRET = os.environ.get("CODMIR_SIGNING_SECRET")
standard = Webhook(SIGNING_SECRET) if SIGNING_SECRET else None


def verified(body: bytes, headers) -> bool:
    """Standard Webhooks when its headers are there (it also refuses replays older than five
    minutes), the contract's X-Codmir-Signature otherwise. `body` must be the raw bytes."""
    if standard is not None and headers.get("webhook-signature"):
        # Every error is a refusal, never a 500: a malformed header raises ValueError, not
        # only WebhookVerificationError.
        try:
            standard.verify(body, dict(headers))
            return True
        except Exception:
            return False
    if not SECRET:
        return False
    expected = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    # Bytes, not str: compare_digest raises TypeError on a non-ASCII str (a hostile header
    # would then be a 500, not a refusal).
    received = headers.get("x-codmir-signature", "").encode("utf-8", "surrogateescape")
    return hmac.compare_digest(expected.encode(), received)


# Event ids already handled: a retry after a lost answer delivers the same event again (same
# id, also in the webhook-id header). Keep them in your database in production: a unique key
# on the event id, inserted in the same transaction as the work.
_seen: set[str] = set()
_seen_lock = threading.Lock()


def first_time(event_id: str) -> bool:
    with _seen_lock:
        if event_id in _seen:
            return False
        _seen.add(event_id)
        return True


def parse(body: bytes):
    """The event, or None when the body is not a JSON object with an id and a type."""
    try:
        event = json.loads(body)
    except ValueError:
        return None
    if not isinstance(event, dict) or "id" not in event or "type" not in event:
        return None
    return event


def handle(event: dict) -> None:
    if event["type"] == "ticket.created":
        pass  # event["data"]["ticket"], ["project"], ["user"]
    elif event["type"] == "ticket.status_changed":
        # event["data"]["changes"]["status"]["from"] -> ["to"]. Deliveries can arrive out of
        # order (retries run in parallel with new events): compare
        # event["data"]["ticket"]["updated_at"] with what you stored before you overwrite.
        pass
    else:
        pass  # a type added after this code was written: ignore it (answering 2xx)
    # One write, newline included: the server's own access log writes to stdout from another
    # thread, and print's separate write of the newline lets it in between.
    print(f"processed {event['id']} {event['type']}\n", end="", flush=True)


_work: "queue.Queue[dict]" = queue.Queue()


def _worker() -> None:
    while True:
        handle(_work.get())


threading.Thread(target=_worker, daemon=True).start()


def enqueue(event: dict) -> None:
    """Hands the event to the worker: the request answers at once (codmir waits at most 15 s,
    then retries)."""
    _work.put(event)
