"""The MES gateway: `andon gateway` and `andon mes send`."""

from __future__ import annotations

import sys
from datetime import datetime
from typing import Annotated

import typer

from andon.cli.root import app


@app.command()
def gateway(
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int | None, typer.Option(min=1, max=65535, help="default ANDON_GATEWAY_PORT (8090)")] = None,
    mqtt: Annotated[str | None, typer.Option(help="also subscribe to the plants' MES topics: mqtt://host:1883")] = None,
    prefect_api_url: Annotated[
        str | None,
        typer.Option(
            help="where events go: one API URL, or several comma-separated (the next when one is away); "
            "default ANDON_GATEWAY_API_URLS, else ANDON_PREFECT_API_URL"
        ),
    ] = None,
) -> None:
    """The MES gateway: POST /v1/mes/events (HMAC-signed), GET /healthz, GET /metrics; a durable
    outbox (ANDON_GATEWAY_OUTBOX_URL, default SQLite under ANDON_HOME) forwarded to Prefect.

    Example: andon gateway --port 8090 --mqtt mqtt://127.0.0.1:1883   (with ANDON_MES_SECRET set)
    """
    from andon.gateway.app import build_gateway, create_app
    from andon.gateway.mqtt import redact
    from andon.httpkit import run_server
    from andon.settings import get_settings

    gw = build_gateway(api_url=prefect_api_url)
    bridge = None
    if mqtt:
        from andon.gateway.mqtt import MqttBridge

        bridge = MqttBridge(gw, mqtt)
        bridge.start()
    port = port or get_settings().gateway_port
    to = ", ".join(gw.forwarder.api_urls) if gw.forwarder else "-"
    sys.stderr.write(
        f"andon: MES gateway on http://{host}:{port} (POST /v1/mes/events), outbox {gw.outbox._safe_url()}, "
        f"forwarding to {to}{', MQTT ' + redact(mqtt) if mqtt else ''}\n"
    )
    try:
        run_server(create_app(gw), host, port)
    finally:
        if bridge:
            bridge.stop()
        if gw.forwarder:
            gw.forwarder.stop()


mes_app = typer.Typer(help="MES events: send a signed one to a gateway (for testing and integration).")
app.add_typer(mes_app, name="mes")


@mes_app.command("send")
def mes_send(
    kind: Annotated[
        str, typer.Argument(help="sku.introduced | failure_type.logged | product_mix.changed | line.reconfigured")
    ],
    plant: Annotated[str, typer.Option(help="plant id")],
    line: Annotated[str | None, typer.Option(help="line id")] = None,
    sku: Annotated[str | None, typer.Option(help="sku.introduced: the new SKU")] = None,
    failure_type: Annotated[str | None, typer.Option(help="failure_type.logged: e.g. TWF")] = None,
    change: Annotated[str | None, typer.Option(help="line.reconfigured: what changed")] = None,
    mix: Annotated[str | None, typer.Option(help='product_mix.changed: JSON {"new": {...}, "previous": {...}}')] = None,
    message_id: Annotated[str | None, typer.Option(help="the MES message id (default: a new one)")] = None,
    url: Annotated[str, typer.Option(help="the gateway")] = "http://127.0.0.1:8090",
) -> None:
    """Sign and POST one MES message to a gateway; prints its answer.

    Example: andon mes send sku.introduced --plant plant-a --line line-1 --sku S9   (with ANDON_MES_SECRET set)
    """
    import json
    import uuid
    from datetime import UTC

    import httpx

    from andon.errors import ConfigError
    from andon.gateway.signing import headers
    from andon.settings import get_settings

    secret = get_settings().mes_secret
    if secret is None:
        raise ConfigError("set ANDON_MES_SECRET to sign MES messages")
    msg: dict[str, object] = {
        "type": kind,
        "message_id": message_id or f"cli-{uuid.uuid4()}",
        "plant": plant,
        "occurred_at": datetime.now(UTC).isoformat(),
    }
    if line:
        msg["line"] = line
    extra = {"sku": sku, "failure_type": failure_type, "change": change}
    msg |= {k: v for k, v in extra.items() if v is not None}
    if mix:
        both = json.loads(mix)
        msg |= {"mix": both.get("new"), "previous_mix": both.get("previous")}
    body = json.dumps(msg).encode()
    signed = headers(body, secret.get_secret_value())
    resp = httpx.post(f"{url.rstrip('/')}/v1/mes/events", content=body, headers=signed)
    sys.stdout.write(resp.text + "\n")
    if resp.status_code >= 300:
        raise typer.Exit(1)
