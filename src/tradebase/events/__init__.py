"""The outbox of user-facing events: written in the transaction of the change that causes
them, read by the webhook dispatcher, the live stream and ``GET /api/v1/events``."""
