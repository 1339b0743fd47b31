"""Links to what is in the object store that open in a browser, through ``andon ui``
(``ANDON_UI_URL``): a plant's object behind its login and plant scope, or a signed link that
expires, for tools without a session (Label Studio, a shared report).

Example:
    >>> plant_of_key("reports/plant-a/drift/20261126T080000.html"), plant_of_key("plant-b/line-1/raw/x.png")
    ('plant-a', 'plant-b')
"""

from __future__ import annotations

import time
from urllib.parse import quote

from andon.web import auth

PLANT_SECOND = ("reports", "explanations")  # reports/<plant>/..., explanations/<plant>/...
NOT_PLANTS = ("central", "labeling", "labels", "alerts", "monitoring", "datasets", "predictions", "governance")
GOVERNANCE_REPORTS = "reports/central/governance/"  # every plant may read the cross-plant report


def plant_of_key(key: str) -> str | None:
    parts = key.split("/")
    if len(parts) < 2:
        return None
    plant = parts[1] if parts[0] in PLANT_SECOND else parts[0]
    return None if plant in NOT_PLANTS else plant


def object_url(key: str, signed_ttl_s: int | None = None, now: float | None = None) -> str:
    """The URL of ``key`` in ``andon ui``: behind the login (a plant's object), or signed for
    ``signed_ttl_s`` seconds (also where the key names no plant)."""
    from andon.settings import get_settings

    s = get_settings()
    plant = plant_of_key(key)
    if signed_ttl_s is None and plant:
        return f"{s.ui_url}/p/{quote(plant, safe='')}/object/{quote(key)}"
    secret = auth.installation_secret()
    expires = int((now or time.time()) + (signed_ttl_s or 7 * 24 * 3600))
    return f"{s.ui_url}/o/{quote(key)}?exp={expires}&sig={auth.signed_link(secret, key, expires)}"
