"""``andon ui``: the floor's web page, server-rendered (FastAPI + Jinja2 with autoescaping, a little
plain JavaScript for keyboard shortcuts, no build step).

Pages (``/p/<plant>/...``, each refused with 403 for a user without that plant):
    /                       the user's plants: queued parts, open alerts
    /p/P                    dashboard: champion and versions (escape / overkill at the operating
                            point, with bounds), open alerts, control charts, drift and audit reports
    /p/P/review             the review queue: the part's image large, its saliency / anomaly map,
                            the model's call; the reviewer must choose (keys 1-9, u unsure, s skip)
    /p/P/alerts             alerts with severity and the chart that fired; acknowledge / resolve
    /p/P/parts              scored parts, paginated; ?q=PART looks one up (/p/P/parts/<id>: the
                            record `andon explain` prints, with its images)
    /p/P/object/<key>       a report or image of the plant, over HTTP (HTML reports sandboxed)
    /o/<key>?exp=&sig=      a time-limited signed link to one object (Label Studio, no session)

Every form is CSRF-protected; every field is escaped; bodies are capped; a hostile request gets a
4xx page, never a 500 (see ``tests/integration/test_ui.py``)."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, quote

from fastapi import FastAPI, Request  # at module level: FastAPI resolves endpoint annotations here
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from andon.errors import AndonError, ObjectNotFoundError
from andon.httpkit import Rejected, read_capped
from andon.web import auth
from andon.web.pages import UNSURE, QueueView, alerts, dashboard, object_allowed, part_record, parts_page

if TYPE_CHECKING:
    from andon.config import PlantConfig
    from andon.storage import ObjectStore

TEMPLATES = Path(__file__).parent / "templates"
STATIC = Path(__file__).parent / "static"
FORM_LIMIT = 16 * 1024
SESSION_COOKIE, LOGIN_COOKIE = "andon_session", "andon_login"
LINK_TTL_S = 24 * 3600
CONTENT_TYPES = {
    ".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".bmp": "image/bmp", ".webp": "image/webp",
    ".html": "text/html; charset=utf-8", ".json": "application/json", ".csv": "text/csv; charset=utf-8",
}  # fmt: skip
PAGE_CSP = "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; frame-ancestors 'none'"
REPORT_CSP = "sandbox allow-scripts; default-src 'self' 'unsafe-inline' data:"  # opaque origin: no cookie access


class Floor:
    """What the app serves: the store, the plants, the accounts, the signing key, the queues."""

    def __init__(self, store: ObjectStore, plants: dict[str, PlantConfig], users: auth.Users, secret: bytes) -> None:
        self.store = store
        self.plants = plants
        self.users = users
        self.secret = secret
        self.queues = {p: QueueView(store, cfg) for p, cfg in plants.items()}
        self.skipped: dict[str, set[str]] = {}  # session nonce -> parts this reviewer skipped
        self.links = {"prefect": "", "mlflow": "", "evidently": ""}

    def link(self, key: str, ttl_s: int = LINK_TTL_S, now: float | None = None) -> str:
        """A signed link path to ``key`` that works without a session until it expires (the path
        part of ``andon.web.links.object_url``, with this app's key)."""
        expires = int((now or time.time()) + ttl_s)
        return f"/o/{quote(key)}?exp={expires}&sig={auth.signed_link(self.secret, key, expires)}"


def build_floor(store: ObjectStore | None = None) -> Floor:
    from andon.config import list_plants, load_plant
    from andon.settings import get_settings
    from andon.storage import open_store

    s = get_settings()
    floor = Floor(
        store or open_store(), {p: load_plant(p) for p in list_plants()}, auth.installation_users(),
        auth.installation_secret(),
    )  # fmt: skip
    evidently = s.evidently_workspace if s.evidently_workspace.startswith("http") else ""
    if s.evidently_ui and not evidently:
        evidently = f"http://{s.host}:{s.evidently_port}"
    floor.links = {"prefect": s.prefect_api_url.removesuffix("/api"), "mlflow": s.mlflow_tracking_uri,
                   "evidently": evidently}  # fmt: skip
    return floor


def _environment() -> Any:
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True)
    env.filters["pct"] = lambda v: "n/a" if v is None or v != v else f"{v * 100:.1f} %"
    env.filters["q"] = lambda v: quote(str(v), safe="")  # one path segment
    env.filters["qp"] = lambda v: quote(str(v), safe="/")  # an object key
    return env


def create_app(floor: Floor) -> FastAPI:
    from starlette.concurrency import run_in_threadpool

    app = FastAPI(title="Andon", docs_url=None, redoc_url=None, openapi_url=None)
    env = _environment()
    # the registry client (MLflow) takes seconds to import: off the first visitor's request
    threading.Thread(target=_warm_up, name="andon-ui-warm-up", daemon=True).start()

    def page(request: Request, name: str, code: int = 200, **ctx: Any) -> HTMLResponse:
        session = getattr(request.state, "session", None)
        ctx |= {
            "user": getattr(request.state, "user", None),
            "csrf": auth.csrf_token(floor.secret, session.nonce) if session else "",
            "links": floor.links,
        }
        return HTMLResponse(env.get_template(name).render(**ctx), status_code=code)

    @app.middleware("http")
    async def headers(request: Request, call_next: Any) -> Response:
        request.state.session = auth.read_session(floor.secret, request.cookies.get(SESSION_COOKIE))
        request.state.user = floor.users.get(request.state.session.user) if request.state.session else None
        response: Response = await call_next(request)
        response.headers.setdefault("Content-Security-Policy", PAGE_CSP)
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "same-origin"
        response.headers.setdefault("Cache-Control", "no-store")
        return response

    @app.exception_handler(Rejected)
    async def _rejected(request: Request, exc: Rejected) -> Response:
        if exc.status == 401 and request.method == "GET":
            return RedirectResponse(f"/login?next={quote(request.url.path)}", status_code=303)
        return page(request, "error.html", exc.status, status=exc.status, detail=exc.detail)

    @app.exception_handler(AndonError)
    async def _andon_error(request: Request, exc: AndonError) -> HTMLResponse:
        status = 404 if isinstance(exc, ObjectNotFoundError) else 400
        return page(request, "error.html", status, status=status, detail=str(exc)[:500])

    def who(request: Request) -> auth.User:
        if request.state.user is None:
            raise Rejected(401, "log in first")
        return request.state.user

    def plant_of(request: Request, plant: str) -> PlantConfig:
        user = who(request)
        cfg = floor.plants.get(plant)
        if cfg is None:
            raise Rejected(404, "no such plant")
        if not user.may_see(plant):
            raise Rejected(403, f"{user.name} may not see {plant}")
        return cfg

    async def form(request: Request, csrf: bool = True) -> dict[str, str]:
        body = await read_capped(request, FORM_LIMIT)
        if "application/x-www-form-urlencoded" not in request.headers.get("content-type", ""):
            raise Rejected(415, "send the page's form")
        try:
            fields = parse_qs(body.decode("utf-8"), max_num_fields=20, strict_parsing=False)
        except (UnicodeDecodeError, ValueError):
            raise Rejected(400, "a form that is not UTF-8 url-encoded") from None
        out = {k: v[0] for k, v in fields.items()}
        if csrf:
            session = request.state.session
            expected = auth.csrf_token(floor.secret, session.nonce) if session else None
            if not expected or not auth.same(out.get("csrf", ""), expected):
                raise Rejected(403, "the form is stale or was not sent by this page: reload it")
        return out

    # ------------------------------------------------------------------ login

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        return {"status": "ok", "plants": sorted(floor.plants)}

    @app.get("/login", response_class=HTMLResponse)
    async def login_form(request: Request, next: str = "/") -> Response:
        import secrets

        token = secrets.token_hex(16)
        resp = page(request, "login.html", login_csrf=token, next=_local(next), error="")
        resp.set_cookie(LOGIN_COOKIE, token, httponly=True, samesite="strict", max_age=600)
        return resp

    @app.post("/login")
    async def login(request: Request) -> Response:
        fields = await form(request, csrf=False)
        cookie = request.cookies.get(LOGIN_COOKIE, "")
        if not cookie or not auth.same(fields.get("login_csrf", ""), cookie):
            raise Rejected(403, "the login form is stale: reload it")
        name, password = fields.get("user", "")[:64], fields.get("password", "")[:256]
        if floor.users.locked(name):
            raise Rejected(429, "too many wrong passwords for this user: wait five minutes")
        user = await run_in_threadpool(floor.users.check, name, password)
        if user is None:
            return page(request, "login.html", 401, login_csrf=cookie, next=_local(fields.get("next", "/")),
                        error="wrong user or password")  # fmt: skip
        resp = RedirectResponse(_local(fields.get("next", "/")), status_code=303)
        resp.set_cookie(SESSION_COOKIE, auth.issue_session(floor.secret, user.name), httponly=True,
                        samesite="strict", max_age=auth.SESSION_S)  # fmt: skip
        resp.delete_cookie(LOGIN_COOKIE)
        return resp

    @app.post("/logout")
    async def logout(request: Request) -> Response:
        await form(request)
        resp = RedirectResponse("/login", status_code=303)
        resp.delete_cookie(SESSION_COOKIE)
        return resp

    # ------------------------------------------------------------------ pages

    @app.get("/", response_class=HTMLResponse)
    async def home(request: Request) -> Response:
        if request.state.user is None:
            return RedirectResponse("/login", status_code=303)
        user = who(request)
        mine = [p for p in sorted(floor.plants) if user.may_see(p)]

        def gather() -> list[dict[str, Any]]:
            from andon.monitoring.monitor import list_alerts

            return [
                {"id": p, **floor.queues[p].counts(), "alerts": len(list_alerts(floor.store, p, "open"))} for p in mine
            ]

        return page(request, "index.html", plants=await run_in_threadpool(gather))

    @app.get("/p/{plant}", response_class=HTMLResponse)
    async def plant_dashboard(request: Request, plant: str) -> Response:
        cfg = plant_of(request, plant)
        data = await run_in_threadpool(dashboard, floor.store, cfg)
        return page(request, "dashboard.html", plant=cfg.id, cfg=cfg, d=data, counts=floor.queues[plant].counts())

    @app.get("/p/{plant}/review", response_class=HTMLResponse)
    async def review(request: Request, plant: str, done: str = "", label: str = "", wrong: str = "") -> Response:
        cfg = plant_of(request, plant)
        skipped = floor.skipped.get(request.state.session.nonce, set())
        part = await run_in_threadpool(floor.queues[plant].next, skipped)
        last = {"part_id": done[:200], "label": label[:40], "wrong": wrong == "1"} if done else None
        return page(request, "review.html", plant=cfg.id, cfg=cfg, part=part, last=last,
                    counts=floor.queues[plant].counts(), classes=list(cfg.recipe.classes))  # fmt: skip

    @app.post("/p/{plant}/review")
    async def review_decide(request: Request, plant: str) -> Response:
        cfg = plant_of(request, plant)
        fields = await form(request)
        part_id, choice = fields.get("part_id", ""), fields.get("label", "")
        if not part_id or len(part_id) > 256:
            raise Rejected(400, "no part named")
        if choice == "skip":
            if await run_in_threadpool(floor.queues[plant].find, part_id) is not None:
                floor.skipped.setdefault(request.state.session.nonce, set()).add(part_id)
            return RedirectResponse(f"/p/{cfg.id}/review", status_code=303)
        if choice != UNSURE and choice not in cfg.recipe.classes:
            raise Rejected(400, f"choose one of {', '.join(cfg.recipe.classes)}, unsure or skip")
        out = await run_in_threadpool(floor.queues[plant].record, part_id, choice, who(request).name)
        query = f"done={quote(part_id, safe='')}&label={quote(choice)}&wrong={int(out['wrong'])}"
        return RedirectResponse(f"/p/{cfg.id}/review?{query}", status_code=303)

    @app.get("/p/{plant}/alerts", response_class=HTMLResponse)
    async def alert_list(request: Request, plant: str) -> Response:
        cfg = plant_of(request, plant)
        recs = await run_in_threadpool(alerts, floor.store, cfg.id)
        return page(request, "alerts.html", plant=cfg.id, alerts=recs)

    @app.post("/p/{plant}/alerts/{alert_id}")
    async def alert_act(request: Request, plant: str, alert_id: str) -> Response:
        from andon.monitoring.monitor import ack_alert, resolve_alert

        cfg = plant_of(request, plant)
        fields = await form(request)
        action = {"ack": ack_alert, "resolve": resolve_alert}.get(fields.get("action", ""))
        if action is None:
            raise Rejected(400, "action: ack or resolve")
        if len(alert_id) > 200 or "/" in alert_id:
            raise Rejected(404, "no such alert")
        await run_in_threadpool(action, floor.store, cfg.id, alert_id, who(request).name, fields.get("note", "")[:2000])
        return RedirectResponse(f"/p/{cfg.id}/alerts", status_code=303)

    @app.get("/p/{plant}/parts", response_class=HTMLResponse)
    async def parts(request: Request, plant: str, q: str = "", page_no: int = 0) -> Response:
        cfg = plant_of(request, plant)
        if q:
            return RedirectResponse(f"/p/{cfg.id}/parts/{quote(q[:256], safe='')}", status_code=303)
        data = await run_in_threadpool(parts_page, floor.store, cfg, max(page_no, 0))
        return page(request, "parts.html", plant=cfg.id, d=data)

    @app.get("/p/{plant}/parts/{part_id}", response_class=HTMLResponse)
    async def part(request: Request, plant: str, part_id: str) -> Response:
        cfg = plant_of(request, plant)
        rec = await run_in_threadpool(part_record, floor.store, cfg, part_id[:256])
        return page(request, "part.html", plant=cfg.id, r=rec)

    @app.get("/p/{plant}/object/{key:path}")
    async def plant_object(request: Request, plant: str, key: str) -> Response:
        plant_of(request, plant)
        if not object_allowed(plant, key):
            raise Rejected(403, "that object is not this plant's")
        return await run_in_threadpool(serve_object, floor.store, key)

    @app.get("/o/{key:path}")
    async def linked_object(key: str, exp: str = "", sig: str = "") -> Response:
        if not auth.check_link(floor.secret, key, exp[:20], sig[:64]):
            raise Rejected(403, "the link is expired or not signed by this Andon")
        return await run_in_threadpool(serve_object, floor.store, key)

    @app.get("/static/{name}")
    async def static(name: str) -> Response:
        path = STATIC / name
        if name not in {p.name for p in STATIC.iterdir()}:
            raise Rejected(404, "no such file")
        media = "text/css" if name.endswith(".css") else "text/javascript"
        return Response(path.read_bytes(), media_type=media, headers={"Cache-Control": "max-age=3600"})

    return app


def _warm_up() -> None:
    import importlib

    for name in ("mlflow", "andon.lifecycle.registry", "pandas", "duckdb"):
        importlib.import_module(name)


def _local(target: str) -> str:
    """Only paths of this site (no open redirect to another host)."""
    return target if target.startswith("/") and not target.startswith("//") and "\\" not in target else "/"


def serve_object(store: ObjectStore, key: str) -> Response:
    from andon.storage import validate_key

    validate_key(key)
    suffix = Path(key).suffix.lower()
    media = CONTENT_TYPES.get(suffix, "application/octet-stream")
    headers = {"Cache-Control": "private, max-age=300"}
    if suffix == ".html":
        headers["Content-Security-Policy"] = REPORT_CSP  # Evidently's report needs its scripts, never our cookies
    elif media == "application/octet-stream":
        headers["Content-Disposition"] = "attachment"
    return Response(store.get(key), media_type=media, headers=headers)
