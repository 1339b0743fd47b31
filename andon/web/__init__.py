"""The floor's web page (``andon ui``): review queue, alerts, plant dashboard, part lookup and every
report over HTTP, for quality engineers, shift leads and auditors. Local accounts scoped to plants
(``andon/web/auth.py``); pages gathered from the same records the CLI and flows use
(``andon/web/pages.py``); server-rendered (``andon/web/app.py``)."""
