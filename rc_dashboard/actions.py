"""Operator actions (hold, unhold, publish, cancel) and signing in and out.

An action is a link to a confirmation page whose form POSTs the same admin request ``rc`` sends, under the
dashboard's operator name. The answer comes back as a one-line message on the release page: the
coordinator's refusal reads exactly as ``rc`` prints it (``refused: <reason>``).
"""

from __future__ import annotations

import structlog
from aiohttp import web
from pydantic import ValidationError

from rc_dashboard.context import GATEWAY, HUB, SESSIONS, SETTINGS, render
from rc_dashboard.gateway import Refused, Unavailable
from rc_dashboard.pages import PageError, describe_invalid, release_id_of, show_release
from rc_dashboard.security import (
    Forbidden,
    clear_session_cookie,
    local_path,
    set_session_cookie,
)
from rc_dashboard.views import Action, rc_command
from schemas.messages import AdminOperation, CancelRelease, HoldRelease, PublishRelease, UnholdRelease

log = structlog.get_logger("rc_dashboard")

QUESTIONS = {
    Action.HOLD: "While held, the release cannot be published; unhold it to allow publication again.",
    Action.UNHOLD: "The release can then be published.",
    Action.PUBLISH: "Every service makes its staged data public and the final version is assigned. "
    "A release that is publishing can no longer be canceled. (While it is publishing, this re-sends the "
    "command to the services that have not answered.)",
    Action.CANCEL: "Every service is told to discard what it staged. This cannot be undone "
    "(the release can be re-run as a new one).",
}


def action_of(request: web.Request) -> Action:
    try:
        return Action(request.match_info["action"])
    except ValueError:
        raise PageError(404, "Not found", "no such page") from None


def _require_token(request: web.Request) -> None:
    if request.app[SETTINGS].read_only:
        raise PageError(
            403, "Read-only", "this dashboard is read-only: it was started without RC_DASHBOARD_TOKEN"
        )


def _operation(action: Action, release_id: str, reason: str) -> AdminOperation:
    if action is Action.HOLD:
        return HoldRelease(release_id=release_id)
    if action is Action.UNHOLD:
        return UnholdRelease(release_id=release_id)
    if action is Action.PUBLISH:
        return PublishRelease(release_id=release_id)
    return CancelRelease(release_id=release_id, reason=reason.strip())


async def confirm_page(request: web.Request) -> web.Response:
    """``GET /releases/{id}/{action}``: what the action does, and the form that does it."""
    action = action_of(request)
    _require_token(request)
    session = request.app[SESSIONS].of(request)
    if session is None or not session.signed_in:
        raise web.HTTPSeeOther(f"/login?next={request.path}")
    view = await show_release(request, release_id_of(request))
    return render(
        request,
        "confirm.html",
        v=view,
        action=action.value,
        question=QUESTIONS[action],
        command=rc_command(action, view.id),
    )


async def do_action(request: web.Request) -> web.Response:
    """``POST /releases/{id}/{action}``: send the admin request; back to the release with the answer."""
    action = action_of(request)
    release_id = release_id_of(request)
    form = await request.post()
    session = request.app[SESSIONS].check_post(request, str(form.get("csrf", "")))
    operator = request.app[SETTINGS].operator
    try:
        operation = _operation(action, release_id, str(form.get("reason", "")))
    except ValidationError as error:
        session.flash("error", describe_invalid(error))
        raise web.HTTPSeeOther(f"/releases/{release_id}/{action.value}") from None
    try:
        await request.app[GATEWAY].act(operation)
    except Refused as refusal:
        session.flash("error", str(refusal))
    except Unavailable as error:
        session.flash(
            "error", f"{error} (the {action.value} may or may not have been done: check the audit trail)"
        )
    else:
        session.flash("ok", f"{action.value}: done for {release_id} by operator {operator}")
    log.info("dashboard.action", action=action.value, release_id=release_id, operator=operator)
    request.app[HUB].hint(release_id)
    raise web.HTTPSeeOther(f"/releases/{release_id}")


# ---------------------------------------------------------------------- signing in and out


async def login_page(request: web.Request) -> web.Response:
    _require_token(request)
    sessions = request.app[SESSIONS]
    session = sessions.of(request) or sessions.start()
    response = render(request, "login.html", session=session, next=local_path(request.query.get("next")))
    set_session_cookie(response, session, secure=sessions.cookie_secure(request))
    return response


async def login(request: web.Request) -> web.Response:
    form = await request.post()
    sessions = request.app[SESSIONS]
    session = sessions.check_post(request, str(form.get("csrf", "")), sign_in=True)
    target = local_path(str(form.get("next", "")))
    if not sessions.token_matches(str(form.get("token", ""))):
        log.warning("dashboard.sign_in_refused", remote=request.remote)
        session.flash("error", "refused: that is not the operator token")
        raise web.HTTPSeeOther(f"/login?next={target}")
    sessions.end(session)
    signed_in = sessions.start(signed_in=True)
    log.info("dashboard.signed_in", remote=request.remote)
    response = web.HTTPSeeOther(target)
    set_session_cookie(response, signed_in, secure=sessions.cookie_secure(request))
    raise response


async def logout(request: web.Request) -> web.Response:
    form = await request.post()
    sessions = request.app[SESSIONS]
    session = sessions.check_post(request, str(form.get("csrf", "")), sign_in=True)
    sessions.end(session)
    response = web.HTTPSeeOther("/")
    clear_session_cookie(response)
    raise response


__all__ = ["Forbidden", "confirm_page", "do_action", "login", "login_page", "logout"]
