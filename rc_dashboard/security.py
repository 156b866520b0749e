"""Who may act, and the headers every answer carries.

The token model: without ``RC_DASHBOARD_TOKEN`` the dashboard is read-only, offers no action and refuses
every POST. With it, an operator signs in by typing the token; the dashboard then keeps a session in
memory, named by a random id in a cookie (HttpOnly, SameSite=Strict, Secure over HTTPS), and every form
carries the session's CSRF token. A POST is refused unless it comes from the dashboard's origin (when the
browser says where it comes from), with a live session and that session's CSRF token. Sessions end after
``SESSION_SECONDS``, on sign-out, and when the dashboard restarts.

The dashboard's origin is the public URL's when one is set (``RC_DASHBOARD_PUBLIC_URL``: behind a
TLS-terminating proxy the request itself says ``http``), else the request's own scheme and ``Host``.
``X-Forwarded-*`` headers are never trusted: anyone who reaches the port could send them.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass, field

from aiohttp import web

SESSION_COOKIE = "rc_dashboard_session"
SESSION_SECONDS = 12 * 3600
#: Sessions kept at most (anonymous ones, made for the sign-in form, are the first to go).
MAX_SESSIONS = 10_000

CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self'",
        "connect-src 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
    ]
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
}


class Forbidden(Exception):
    """A request that may not do what it asks; the text says why in one line."""


@dataclass
class Flash:
    kind: str  # "ok" or "error"
    text: str


@dataclass(eq=False)
class Session:
    id: str
    csrf: str
    signed_in: bool = False
    expires: float = 0.0
    flashes: list[Flash] = field(default_factory=list)

    def flash(self, kind: str, text: str) -> None:
        self.flashes = [*self.flashes[-4:], Flash(kind, text)]

    def take_flashes(self) -> list[Flash]:
        flashes, self.flashes = self.flashes, []
        return flashes


class Sessions:
    def __init__(self, token: str | None, *, public_origin: str | None = None) -> None:
        self._token_digest = hashlib.sha256(token.encode()).digest() if token else None
        self._sessions: OrderedDict[str, Session] = OrderedDict()
        #: The only origin forms may come from (the public URL's), or ``None``: the request's own.
        self.public_origin = public_origin

    def origin(self, request: web.Request) -> str:
        """The dashboard's origin, as a browser names it in ``Origin``."""
        return self.public_origin or f"{request.scheme}://{request.host}"

    def cookie_secure(self, request: web.Request) -> bool:
        """Whether the session cookie is sent over HTTPS only (HTTPS here, or a public ``https`` URL)."""
        return request.secure or self.origin(request).startswith("https://")

    @property
    def read_only(self) -> bool:
        return self._token_digest is None

    def token_matches(self, given: str) -> bool:
        if self._token_digest is None:
            return False
        return hmac.compare_digest(hashlib.sha256(given.encode()).digest(), self._token_digest)

    def of(self, request: web.Request) -> Session | None:
        """The live session named by the request's cookie, if any."""
        session_id = request.cookies.get(SESSION_COOKIE, "")
        session = self._sessions.get(session_id)
        if session is None:
            return None
        if session.expires < time.monotonic():
            del self._sessions[session_id]
            return None
        return session

    def start(self, *, signed_in: bool = False) -> Session:
        """A new session with a fresh id and CSRF token (signing in always starts a new one)."""
        session = Session(
            secrets.token_urlsafe(32),
            secrets.token_urlsafe(32),
            signed_in,
            time.monotonic() + SESSION_SECONDS,
        )
        self._sessions[session.id] = session
        while len(self._sessions) > MAX_SESSIONS:
            oldest = next((s for s in self._sessions.values() if not s.signed_in), None)
            self._sessions.pop(oldest.id if oldest else next(iter(self._sessions)))
        return session

    def end(self, session: Session) -> None:
        self._sessions.pop(session.id, None)

    def check_post(self, request: web.Request, form_csrf: str, *, sign_in: bool = False) -> Session:
        """The session a POST acts for; :class:`Forbidden` (saying why) unless it may act."""
        if self.read_only:
            raise Forbidden("this dashboard is read-only: it was started without RC_DASHBOARD_TOKEN")
        origin = request.headers.get("Origin")
        if origin is not None and origin != self.origin(request):
            raise Forbidden("refused: the form was not sent from this dashboard")
        session = self.of(request)
        if session is None:
            raise Forbidden("refused: no session (sign in again)")
        if not hmac.compare_digest(form_csrf.encode(), session.csrf.encode()):
            raise Forbidden("refused: the form's CSRF token is missing or wrong (reload the page)")
        if not sign_in and not session.signed_in:
            raise Forbidden("refused: sign in first")
        return session


def set_session_cookie(response: web.StreamResponse, session: Session, *, secure: bool) -> None:
    response.set_cookie(
        SESSION_COOKIE,
        session.id,
        httponly=True,
        samesite="Strict",
        secure=secure,
        path="/",
        max_age=SESSION_SECONDS,
    )


def clear_session_cookie(response: web.StreamResponse) -> None:
    response.del_cookie(SESSION_COOKIE, path="/")


async def add_security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare``: the security headers on every answer, errors and static files included."""
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    if not request.path.startswith("/static/"):
        response.headers.setdefault("Cache-Control", "no-store")


def local_path(target: str | None, default: str = "/") -> str:
    """``target`` if it is a path on this site (``/...``, not ``//host``), else ``default``."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return default
    return target
