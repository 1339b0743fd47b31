"""The MES gateway: signed webhooks (and MQTT) in, a durable outbox, Prefect events out.

``schemas`` (the messages), ``signing`` (HMAC-SHA256), ``outbox`` (SQLite / Postgres),
``forwarder`` (delivery to the Prefect server, confirmed), ``app`` (FastAPI; import only to serve),
``mqtt`` (Unified Namespace subscriber).
"""
