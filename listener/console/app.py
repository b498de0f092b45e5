"""The console's Starlette app: pages, fragments for live refresh, login and actions.

Every page is rendered on the server with autoescaping on (payloads, run ids and errors
come from platforms and senders) and works with JavaScript off; `static/live.js` only
refetches a page's live fragment. A strict Content-Security-Policy allows no inline
script at all, so even a template mistake could not run injected code.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime, timedelta
from importlib import resources
from typing import Any, Protocol
from urllib.parse import urlencode

import jinja2
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route
from starlette.templating import Jinja2Templates

from listener.console import actions, auth
from listener.console.forms import _FormError, read_form
from listener.console.queries import CallQuery, RunQuery, _FilterError, build_timeline
from listener.console.settings import ConsoleSettings
from listener.console.strip import health_strip
from listener.errors import RecoveryError
from listener.events import Origin
from listener.metrics import Metrics
from listener.receiver import Receiver
from listener.recording import EventRecorder
from listener.recovery import CallFilter, check_handler_names, parse_when
from listener.redaction import redact_headers
from listener.registry import Handlers
from listener.sources import Source
from listener.store.base import Store, StoreUnavailable

__all__ = ["ConsoleBackend", "console_app"]

# Run ends the health strip counts, back from now.
HEALTH_WINDOW_HOURS = 24.0

_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self';"
    " connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
_STATIC = {"console.css": "text/css", "live.js": "text/javascript"}


class ConsoleBackend(Protocol):
    """What the console reads and acts on: a started `Listener` is one."""

    @property
    def store(self) -> Store: ...

    @property
    def sources(self) -> dict[str, Source]: ...

    recorder: EventRecorder
    handlers: Handlers
    metrics: Metrics
    receiver: Receiver


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("listener.console", "templates"),
        autoescape=True,  # every template, whatever its name
        undefined=jinja2.StrictUndefined,
    )
    env.filters["when"] = _when
    env.filters["pretty"] = _pretty
    env.filters["seconds"] = _seconds
    return env


def _seconds(value: float | None) -> str:
    if value is None:
        return ""
    # Handler calls take milliseconds; lags take seconds or more.
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.1f} s"


def _when(value: datetime | None) -> str:
    if value is None:
        return ""
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def _pretty(value: Any) -> str:
    try:
        return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True, default=str)
    except (TypeError, ValueError):
        return repr(value)


Handler = Callable[[Request], Awaitable[Response]]


class Console:
    def __init__(self, backend: ConsoleBackend, settings: ConsoleSettings) -> None:
        if not settings.enabled:
            raise ValueError("the console needs a read_token or an admin_token")
        self.backend = backend
        self.settings = settings
        self.templates = Jinja2Templates(env=_environment())

    # -- plumbing ------------------------------------------------------------------------

    def session(self, request: Request) -> auth.Session | None:
        header = request.headers.get("authorization")
        if header:
            return auth.from_bearer(self.settings, header)
        cookie = request.cookies.get(auth.COOKIE_NAME)
        if cookie:
            return auth.from_cookie(self.settings, cookie, time.time())
        return None

    def render(
        self,
        request: Request,
        name: str,
        context: Mapping[str, Any],
        *,
        status: int = 200,
        session: auth.Session | None = None,
    ) -> Response:
        data = {
            "session": session,
            "refresh_ms": int(self.settings.refresh * 1000),
            "error": None,
            "live": None,
            **context,
        }
        response = self.templates.TemplateResponse(request, name, data, status_code=status)
        return _secured(response)

    def page(self, handler: Callable[[Request, auth.Session], Awaitable[Response]]) -> Handler:
        """`handler` for a signed-in caller; others go to the login page (a browser) or get
        401 (a bearer caller, or a fragment request)."""

        async def endpoint(request: Request) -> Response:
            session = self.session(request)
            if session is None:
                if request.headers.get("authorization") or request.query_params.get("part"):
                    return _secured(
                        Response(
                            "unauthorized\n",
                            status_code=401,
                            headers={"WWW-Authenticate": 'Bearer realm="console"'},
                        )
                    )
                return _secured(RedirectResponse(request.url_for("console:login"), 303))
            try:
                self.backend.store  # noqa: B018  # raises while the listener is stopped
            except RuntimeError:
                return _secured(Response("the listener is not started\n", status_code=503))
            try:
                return await handler(request, session)
            except StoreUnavailable:
                # Said plainly, and the live refresh simply tries again later.
                return _secured(Response("the store is unavailable\n", status_code=503))

        return endpoint

    def action(
        self, handler: Callable[[Request, auth.Session, dict[str, str]], Awaitable[Response]]
    ) -> Handler:
        """`handler` for an admin's POST carrying the session's CSRF token."""

        async def endpoint(request: Request, session: auth.Session) -> Response:
            if not session.admin:
                return self.render(request, "denied.html", {}, status=403, session=session)
            try:
                form = await read_form(request)
            except _FormError as exc:
                return _secured(Response(f"{exc}\n", status_code=exc.status))
            if not session.csrf_ok(form.get("csrf")):
                return _secured(Response("missing or stale CSRF token\n", status_code=403))
            return await handler(request, session, form)

        return self.page(endpoint)

    # -- login -----------------------------------------------------------------------------

    async def login_page(self, request: Request) -> Response:
        return self.render(request, "login.html", {})

    async def login(self, request: Request) -> Response:
        try:
            form = await read_form(request)
        except _FormError as exc:
            return _secured(Response(f"{exc}\n", status_code=exc.status))
        cookie = auth.login(self.settings, form.get("token", ""), time.time())
        if cookie is None:
            return self.render(
                request, "login.html", {"error": "That token is not valid."}, status=401
            )
        response = RedirectResponse(request.url_for("console:runs"), 303)
        response.set_cookie(
            auth.COOKIE_NAME,
            cookie,
            max_age=int(self.settings.session_hours * 3600),
            path=request.scope.get("root_path", "") or "/",
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )
        return _secured(response)

    async def logout(self, request: Request) -> Response:
        response = RedirectResponse(request.url_for("console:login"), 303)
        response.delete_cookie(
            auth.COOKIE_NAME, path=request.scope.get("root_path", "") or "/", httponly=True
        )
        return _secured(response)

    # -- pages -----------------------------------------------------------------------------

    async def runs(self, request: Request, session: auth.Session) -> Response:
        now = datetime.now(UTC)
        try:
            query = RunQuery.parse(request.query_params, now)
        except _FilterError as exc:
            return self.render(
                request,
                "runs.html",
                {
                    "query": None,
                    "runs": [],
                    "next_url": None,
                    "error": str(exc),
                    "statuses": _STATUSES,
                },
                status=400,
                session=session,
            )
        if query.run_id is not None:
            return _secured(
                RedirectResponse(
                    f"{request.url_for('console:run')}?{urlencode({'id': query.run_id})}", 303
                )
            )
        store = self.backend.store
        try:
            page = await store.list_runs(
                status=query.status or None,
                provider=query.provider,
                application=query.application,
                since=query.since,
                until=query.until,
                limit=self.settings.page_size,
                cursor=query.cursor,
            )
        except ValueError:
            return self.render(
                request,
                "runs.html",
                {
                    "query": query,
                    "runs": [],
                    "next_url": None,
                    "error": "invalid page cursor",
                    "statuses": _STATUSES,
                },
                status=400,
                session=session,
            )
        return self._listing(
            request, session, "runs", query.given, query.cursor, page.next_cursor,
            {"query": query, "runs": page.items, "statuses": _STATUSES},
        )  # fmt: skip

    def _listing(
        self,
        request: Request,
        session: auth.Session,
        name: str,
        given: Mapping[str, str],
        cursor: str | None,
        next_cursor: str | None,
        context: dict[str, Any],
    ) -> Response:
        """A list page (`<name>.html`), or only its rows (`_<name>_rows.html`) for the live
        refresh, which only the first page gets; the next page's link keeps the filters."""
        rows = request.query_params.get("part") == "rows"
        context["next_url"] = (
            "?" + urlencode({**given, "cursor": next_cursor}) if next_cursor is not None else None
        )
        context["live"] = "?" + urlencode({**given, "part": "rows"}) if cursor is None else None
        template = f"_{name}_rows.html" if rows else f"{name}.html"
        return self.render(request, template, context, session=session)

    async def run(self, request: Request, session: auth.Session) -> Response:
        run_id = request.query_params.get("id", "")
        store = self.backend.store
        record = await store.get_run(run_id) if run_id else None
        history = await store.run_history(run_id) if run_id else None
        calls = (await store.list_calls(run_id=run_id, limit=500)).items if run_id else []
        if record is None and (history is None or not history.events):
            return self.render(
                request,
                "run.html",
                {"run_id": run_id, "timeline": None},
                status=404,
                session=session,
            )
        assert history is not None
        timeline = build_timeline(record, history, list(reversed(calls)))
        name = "_timeline.html" if request.query_params.get("part") == "timeline" else "run.html"
        live = "?" + urlencode({"id": run_id, "part": "timeline"})
        return self.render(
            request, name, {"run_id": run_id, "timeline": timeline, "live": live}, session=session
        )

    async def deliveries(self, request: Request, session: auth.Session) -> Response:
        store = self.backend.store
        params = request.query_params
        cursor = params.get("cursor") or None
        ucursor = params.get("ucursor") or None
        origin_word = params.get("origin") or None
        try:
            origin = Origin(origin_word) if origin_word is not None else None
        except ValueError:
            known = ", ".join(o.value for o in Origin)
            return _secured(Response(f"origin must be one of {known}\n", status_code=400))
        given = {name: params[name] for name in ("origin", "run_id") if params.get(name)}
        try:
            events = await store.list_events(
                run_id=params.get("run_id") or None,
                origin=origin,
                limit=self.settings.page_size,
                cursor=cursor,
            )
            unroutable = await store.list_unroutable(limit=self.settings.page_size, cursor=ucursor)
        except ValueError:
            return _secured(Response("invalid page cursor\n", status_code=400))
        rows = [
            {
                "id": row.id,
                "source": row.source,
                "delivery_id": row.delivery_id,
                "reason": row.reason,
                "received_at": row.received_at,
                # Stored redacted already; filtered again so no credential is ever shown.
                "headers": redact_headers(row.headers),
                "body": row.body.decode("utf-8", "replace"),
            }
            for row in unroutable.items
        ]
        return self.render(
            request,
            "deliveries.html",
            {
                "events": events.items,
                "given": given,
                "origins": [o.value for o in Origin],
                "next_events": f"?{urlencode({**given, 'cursor': events.next_cursor})}"
                if events.next_cursor
                else None,
                "unroutable": rows,
                # Newest first; refusals are not stored (their bodies are unverified).
                "refusals": list(reversed(self.backend.receiver.refusals)),
                "next_unroutable": f"?{urlencode({'ucursor': unroutable.next_cursor})}"
                if unroutable.next_cursor
                else None,
            },
            session=session,
        )

    async def calls(self, request: Request, session: auth.Session) -> Response:
        try:
            query = CallQuery.parse(request.query_params)
            page = await self.backend.store.list_calls(
                state=query.state,
                handler=query.handler,
                run_id=query.run_id,
                limit=self.settings.page_size,
                cursor=query.cursor,
            )
        except (_FilterError, ValueError) as exc:
            return self.render(
                request,
                "calls.html",
                {"query": None, "calls": [], "next_url": None, "error": str(exc)},
                status=400,
                session=session,
            )
        # `back`: where a replay button returns, this list with its filters.
        back = request.url.path + "?" + urlencode(query.given)
        return self._listing(
            request, session, "calls", query.given, query.cursor, page.next_cursor,
            {"query": query, "calls": page.items, "back": back},
        )  # fmt: skip

    async def audit(self, request: Request, session: auth.Session) -> Response:
        try:
            page = await self.backend.store.list_audit(
                limit=self.settings.page_size, cursor=request.query_params.get("cursor") or None
            )
        except ValueError:
            return _secured(Response("invalid page cursor\n", status_code=400))
        next_url = f"?{urlencode({'cursor': page.next_cursor})}" if page.next_cursor else None
        return self.render(
            request, "audit.html", {"rows": page.items, "next_url": next_url}, session=session
        )

    async def health(self, request: Request, session: auth.Session) -> Response:
        store = self.backend.store
        since = datetime.now(UTC) - timedelta(hours=HEALTH_WINDOW_HOURS)
        strip = health_strip(
            self.backend.metrics,
            await store.counts(),
            await store.list_run_ends(since=since),
            HEALTH_WINDOW_HOURS,
        )
        name = "_health.html" if request.query_params.get("part") == "strip" else "health.html"
        return self.render(request, name, {"strip": strip}, session=session)

    async def replay_form(self, request: Request, session: auth.Session) -> Response:
        return self.render(request, "replay.html", {"form": {}, "counts": None}, session=session)

    async def backfill_form(self, request: Request, session: auth.Session) -> Response:
        names = self.backend.handlers.names()
        context: dict[str, Any] = {"form": {}, "counts": None, "names": names}
        return self.render(request, "backfill.html", context, session=session)

    # -- actions ---------------------------------------------------------------------------

    async def replay_call(
        self, request: Request, session: auth.Session, form: dict[str, str]
    ) -> Response:
        try:
            call_id = int(form.get("call_id", ""))
        except ValueError:
            return _secured(Response("call_id must be a number\n", status_code=400))
        done = await actions.replay_one(self.backend.store, session.label, call_id)
        if not done:
            return self.render(
                request,
                "message.html",
                {
                    "message": f"Call {call_id} is not dead or done (or does not exist): "
                    "nothing replayed."
                },
                status=409,
                session=session,
            )
        back = form.get("back") or str(request.url_for("console:calls"))
        # Only a path on this site: "//host" and "/\\host" would leave it.
        if not back.startswith("/") or back.startswith("//") or "\\" in back:
            back = str(request.url_for("console:calls"))
        return _secured(RedirectResponse(back, 303))

    async def replay(
        self, request: Request, session: auth.Session, form: dict[str, str]
    ) -> Response:
        """A dry run counts first; the page it shows carries the fixed window, so the
        confirmed replay takes exactly the calls that were counted (and no newer ones)."""
        confirm = form.get("confirm") == "yes"
        handlers = [name.strip() for name in form.get("handler", "").split(",") if name.strip()]
        try:
            call_filter = CallFilter.parse(
                states=[form.get("state") or "dead"],
                handlers=handlers or None,
                provider=form.get("provider") or None,
                application=form.get("application") or None,
                since=form.get("since") or None,
                until=form.get("until") or None,
            )
            if call_filter.handlers:
                await check_handler_names(
                    self.backend.store, self.backend.handlers, call_filter.handlers
                )
            counts = await actions.replay_by_filter(
                self.backend.store, session.label, call_filter, dry_run=not confirm
            )
        except RecoveryError as exc:
            return self.render(
                request,
                "replay.html",
                {"form": form, "counts": None, "error": str(exc)},
                status=400,
                session=session,
            )
        fixed = counts.filter
        shown = {
            "state": fixed.states[0].value,
            "handler": ",".join(fixed.handlers or ()),
            "provider": fixed.provider or "",
            "application": fixed.application or "",
            "since": fixed.since.isoformat() if fixed.since else "",
            "until": fixed.until.isoformat() if fixed.until else "",
        }
        return self.render(
            request, "replay.html", {"form": shown, "counts": counts}, session=session
        )

    async def backfill(
        self, request: Request, session: auth.Session, form: dict[str, str]
    ) -> Response:
        """Like a replay by filter: a dry run counts over a window it fixes (until now, at
        the latest), and the confirmed backfill takes exactly that window."""
        confirm = form.get("confirm") == "yes"
        names = self.backend.handlers.names()
        now = datetime.now(UTC)
        try:
            since = parse_when(form.get("since") or None, "since", now)
            until = parse_when(form.get("until") or None, "until", now) or now
            if since is None:
                raise RecoveryError("since: give the start of the window (7d, or an ISO time)")
            counts = await actions.backfill_handler(
                self.backend.store,
                session.label,
                self.backend.handlers,
                form.get("handler", "").strip(),
                since=since,
                until=until,
                dry_run=not confirm,
            )
        except RecoveryError as exc:
            context: dict[str, Any] = {
                "form": form,
                "counts": None,
                "error": str(exc),
                "names": names,
            }
            return self.render(request, "backfill.html", context, status=400, session=session)
        shown = {
            "handler": counts.handler,
            "since": counts.since.isoformat(),
            "until": counts.until.isoformat(),
        }
        return self.render(
            request,
            "backfill.html",
            {"form": shown, "counts": counts, "names": names},
            session=session,
        )

    async def reprocess(
        self, request: Request, session: auth.Session, form: dict[str, str]
    ) -> Response:
        confirm = form.get("confirm") == "yes"
        counts = await actions.reprocess(
            self.backend.store,
            session.label,
            self.backend.recorder,
            self.backend.sources,
            dry_run=not confirm,
        )
        return self.render(request, "reprocess.html", {"counts": counts}, session=session)

    async def static(self, request: Request) -> Response:
        name = request.path_params["name"]
        if name not in _STATIC:
            return Response("not found\n", status_code=404)
        body = resources.files("listener.console").joinpath("static", name).read_bytes()
        response = Response(body, media_type=_STATIC[name])
        response.headers["Cache-Control"] = "max-age=300"
        return _secured(response)

    async def index(self, request: Request) -> Response:
        return _secured(RedirectResponse(request.url_for("console:runs"), 303))

    def routes(self) -> list[Route]:
        return [
            Route("/", self.index, name="console:index"),
            Route("/login", self.login_page, name="console:login", methods=["GET"]),
            Route("/login", self.login, methods=["POST"]),
            Route("/logout", self.logout, name="console:logout", methods=["POST"]),
            Route("/runs", self.page(self.runs), name="console:runs"),
            Route("/run", self.page(self.run), name="console:run"),
            Route("/deliveries", self.page(self.deliveries), name="console:deliveries"),
            Route("/calls", self.page(self.calls), name="console:calls"),
            Route("/audit", self.page(self.audit), name="console:audit"),
            Route("/health", self.page(self.health), name="console:health"),
            Route(
                "/replay", self.page(self.replay_form), name="console:replay_form", methods=["GET"]
            ),
            Route("/replay", self.action(self.replay), name="console:replay", methods=["POST"]),
            Route(
                "/backfill",
                self.page(self.backfill_form),
                name="console:backfill_form",
                methods=["GET"],
            ),
            Route(
                "/backfill", self.action(self.backfill), name="console:backfill", methods=["POST"]
            ),
            Route(
                "/calls/replay",
                self.action(self.replay_call),
                name="console:replay_call",
                methods=["POST"],
            ),
            Route(
                "/unroutable/reprocess",
                self.action(self.reprocess),
                name="console:reprocess",
                methods=["POST"],
            ),
            Route("/static/{name}", self.static, name="console:static"),
        ]


_STATUSES = ("queued", "running", "succeeded", "failed", "canceled", "expired")


def _secured(response: Response) -> Response:
    response.headers["Content-Security-Policy"] = _CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "same-origin"
    response.headers.setdefault("Cache-Control", "no-store")
    return response


def console_app(backend: ConsoleBackend, settings: ConsoleSettings) -> Starlette:
    """The console as an app of its own, to mount (the listener mounts it at `/ui`)."""
    app = Starlette(routes=Console(backend, settings).routes())
    app.router.redirect_slashes = False
    return app
