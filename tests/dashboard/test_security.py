"""Who may act, and untrusted text staying text, in a real browser against a real coordinator.

- Without the token: no action is offered, and a POST (even a well-formed one) is refused.
- With the token: a form posted from another origin (the browser sends the session cookie: same site) is
  refused, and so is a POST without the session's CSRF token; the coordinator's refusal shows as ``rc``
  prints it.
- Behind a TLS-terminating proxy, told its public URL: an operator signs in and acts, the session cookie
  is Secure, and the dashboard's own (plain HTTP) origin may no longer post.
- Names, descriptions, notes, reasons and service messages full of markup run nothing.
- An unknown release is a 404 page, never a traceback.
"""

from __future__ import annotations

import re
import shutil
import ssl
import subprocess
import urllib.parse
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from aiohttp import web
from playwright.async_api import Browser, BrowserContext, Page, expect

from rc_cli.client import AdminClient
from rc_dashboard.security import SESSION_COOKIE
from schemas.enums import ReleaseState
from schemas.messages import (
    AddNote,
    CancelRelease,
    CreateRelease,
    EventPage,
    HoldRelease,
    ListEvents,
    ReleaseResult,
    ShowRelease,
)
from tests._proxy import TcpProxy
from tests.cli.conftest import Rc
from tests.coordinator.fixtures import SERVICES, Running
from tests.coordinator.simulated import SimulatedService
from tests.dashboard.conftest import TOKEN, StartDashboard, StartService, require_and_wait, wait_for

LIVE_MS = 5_000


async def create_release(admin: AdminClient, name: str = "Fall", description: str = "") -> str:
    answer = await admin.request(CreateRelease(name=name, studies=("SD_ONE",), description=description))
    assert isinstance(answer.result, ReleaseResult), answer.error
    return answer.result.release.id


async def show(admin: AdminClient, release_id: str) -> ReleaseResult:
    answer = await admin.request(ShowRelease(release_id=release_id, events=0))
    assert isinstance(answer.result, ReleaseResult), answer.error
    return answer.result


async def staged_release(admin: AdminClient) -> str:
    release_id = await create_release(admin)

    async def staged() -> bool:
        return (await show(admin, release_id)).release.state is ReleaseState.STAGED

    await wait_for(staged, 30, f"{release_id} staged")
    return release_id


async def publish_attempts(admin: AdminClient, release_id: str) -> int:
    answer = await admin.request(ListEvents(release_id=release_id, state=ReleaseState.PUBLISHING))
    assert isinstance(answer.result, EventPage)
    return len(answer.result.events)


@pytest.fixture
async def attacker() -> AsyncIterator[Callable[[str], str]]:
    """``attacker(action_url)``: the URL of a page on another origin that posts a form to ``action_url``."""
    forms: dict[str, str] = {}

    async def page(request: web.Request) -> web.Response:
        target = forms[request.match_info["n"]]
        html = (
            f'<form id="f" method="post" action="{target}"><input name="csrf" value="guessed"></form>'
            "<script>document.getElementById('f').submit()</script>"
        )
        return web.Response(text=html, content_type="text/html")

    app = web.Application()
    app.router.add_get("/{n}", page)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    port = runner.addresses[0][1]

    def make(action_url: str) -> str:
        forms[str(len(forms))] = action_url
        return f"http://127.0.0.1:{port}/{len(forms) - 1}"

    yield make
    await runner.cleanup()


async def forged_post_status(page: Page, attacker_url: str) -> int:
    async with page.expect_response(lambda response: response.request.method == "POST") as posted:
        await page.goto(attacker_url)
    return (await posted.value).status


async def sign_in(page: Page, base: str) -> None:
    await page.goto(f"{base}/login")
    await page.get_by_label("Operator token").fill(TOKEN)
    await page.get_by_role("button", name="Sign in").click()
    await page.wait_for_url(f"{base}/")


async def test_read_only_offers_no_action_and_refuses_posts(
    context: BrowserContext,
    start_dashboard: StartDashboard,
    ready: list[SimulatedService],
    admin: AdminClient,
    attacker: Callable[[str], str],
) -> None:
    release_id = await staged_release(admin)
    dashboard = await start_dashboard(token=None)
    page = await context.new_page()
    await page.goto(f"{dashboard.url}/releases/{release_id}")
    await expect(page.locator("#actions")).to_contain_text("read-only")
    assert await page.locator("form[method=post]").count() == 0
    assert await page.locator("[class*=action-]").count() == 0
    assert await page.get_by_role("link", name="Sign in").count() == 0

    response = await page.goto(f"{dashboard.url}/releases/{release_id}/publish")
    assert response is not None
    assert response.status == 403
    status = await forged_post_status(page, attacker(f"{dashboard.url}/releases/{release_id}/publish"))
    assert status == 403
    await expect(page.locator("main")).to_contain_text("read-only")
    direct = await page.request.post(
        f"{dashboard.url}/releases/{release_id}/publish",
        form={"csrf": "x"},
        headers={"Origin": dashboard.url},
    )
    assert direct.status == 403
    assert (await show(admin, release_id)).release.state is ReleaseState.STAGED
    assert await publish_attempts(admin, release_id) == 0


async def test_with_the_token_forged_posts_are_refused_and_refusals_read_as_rc_prints_them(
    context: BrowserContext,
    start_dashboard: StartDashboard,
    ready: list[SimulatedService],
    admin: AdminClient,
    attacker: Callable[[str], str],
    rc: Rc,
) -> None:
    release_id = await staged_release(admin)
    dashboard = await start_dashboard(token=TOKEN)
    page = await context.new_page()
    await sign_in(page, dashboard.url)
    action = f"{dashboard.url}/releases/{release_id}/publish"

    # The session cookie goes along (127.0.0.1 on another port is the same site), but the origin is wrong.
    assert await forged_post_status(page, attacker(action)) == 403
    await expect(page.locator("main")).to_contain_text("not sent from this dashboard")
    # Right origin and cookie, but not the session's CSRF token.
    forms: list[dict[str, str | float | bool]] = [{}, {"csrf": "guessed"}]
    for form in forms:
        refused = await page.request.post(action, form=form, headers={"Origin": dashboard.url})
        assert refused.status == 403
        assert "CSRF" in await refused.text()
    assert (await show(admin, release_id)).release.state is ReleaseState.STAGED
    assert await publish_attempts(admin, release_id) == 0

    # The real form, after someone held the release meanwhile: the coordinator's reason, as rc prints it.
    await page.goto(action)
    answer = await admin.request(HoldRelease(release_id=release_id))
    assert answer.ok, answer.error
    await page.get_by_role("button", name=f"Publish {release_id}").click()
    await page.wait_for_url(f"{dashboard.url}/releases/{release_id}")
    printed = await rc("release", "publish", release_id)
    assert printed.code == 1
    assert printed.stderr.startswith("rc: refused: ")
    await expect(page.locator(".flash-error")).to_have_text(printed.stderr.strip().removeprefix("rc: "))
    await expect(page.locator("a.action-unhold")).to_be_visible()
    await expect(page.locator("a.action-publish")).to_have_count(0)


@pytest.fixture
def tls_context(tmp_path: Path) -> ssl.SSLContext:
    """A server's TLS context with a fresh self-signed certificate for 127.0.0.1 (made by openssl)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.fail("openssl is missing: the TLS proxy test makes its certificate with it", pytrace=False)
    key, certificate = tmp_path / "key.pem", tmp_path / "certificate.pem"
    new_certificate = ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    for_loopback = ["-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"]
    subprocess.run(
        [openssl, *new_certificate, "-keyout", str(key), "-out", str(certificate), *for_loopback],
        check=True,
        capture_output=True,
        timeout=60,
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certificate, key)
    return context


async def test_behind_a_tls_proxy_with_its_public_url_an_operator_signs_in_and_acts(
    browser: Browser,
    start_dashboard: StartDashboard,
    ready: list[SimulatedService],
    admin: AdminClient,
    tls_context: ssl.SSLContext,
) -> None:
    """As the README recommends: TLS ends at a proxy, which reaches the dashboard over plain HTTP (so the
    request itself says ``http``); the browser's ``Origin`` is the proxy's ``https`` one."""
    release_id = await staged_release(admin)
    async with TcpProxy("127.0.0.1", 0, ssl=tls_context) as proxy:
        public = f"https://127.0.0.1:{proxy.port}"
        dashboard = await start_dashboard(token=TOKEN, public_url=public)
        proxy.upstream = ("127.0.0.1", urllib.parse.urlsplit(dashboard.url).port or 0)
        context = await browser.new_context(ignore_https_errors=True)
        try:
            page = await context.new_page()
            await sign_in(page, public)
            cookies = [c for c in await context.cookies() if c["name"] == SESSION_COOKIE]
            assert [c.get("secure") for c in cookies] == [True]

            await page.goto(f"{public}/releases/{release_id}/hold")
            await page.get_by_role("button", name=f"Hold {release_id}").click()
            await page.wait_for_url(f"{public}/releases/{release_id}")
            await expect(page.locator(".flash-ok")).to_contain_text(f"hold: done for {release_id}")
            assert (await show(admin, release_id)).release.held

            # Only the public origin may post now, not the address the dashboard listens on.
            csrf = await page.locator("form[action='/logout'] input[name=csrf]").input_value()
            unhold = f"{public}/releases/{release_id}/unhold"
            refused = await page.request.post(unhold, form={"csrf": csrf}, headers={"Origin": dashboard.url})
            assert refused.status == 403
            assert "not sent from this dashboard" in await refused.text()
            assert (await show(admin, release_id)).release.held
        finally:
            await context.close()


MARKUP = '<img src=x onerror="window.__pwned=1">'
NOTE = f"""# Fall notes
<script>window.__pwned = 2</script>

[click me](javascript:window.__pwned=3) and
<a href="javascript:window.__pwned=4" onclick="window.__pwned=5">raw</a>

{MARKUP} **bold** [a real link](https://example.org/notes)
"""


async def nothing_ran(page: Page) -> None:
    assert await page.evaluate("window.__pwned") is None
    main = page.locator("main")
    assert await main.locator("script, img, iframe, object, embed").count() == 0
    assert await main.locator("a[href^='javascript' i], a[href^='data' i]").count() == 0
    for handler in ("onerror", "onclick", "onload", "onmouseover"):
        assert await main.locator(f"[{handler}]").count() == 0


async def test_untrusted_text_stays_text(
    context: BrowserContext,
    start_dashboard: StartDashboard,
    coordinator: Running,
    admin: AdminClient,
    services: StartService,
) -> None:
    for name in SERVICES:  # they say why they canceled in markup
        await services(name, reason=f"{name} discarded {MARKUP}")
    await require_and_wait(admin)
    release_id = await create_release(
        admin, name=f"Fall {MARKUP}", description="<script>window.__pwned=6</script>"
    )
    assert (await admin.request(AddNote(release_id=release_id, text=NOTE))).ok
    dashboard = await start_dashboard()
    page = await context.new_page()
    response = await page.goto(f"{dashboard.url}/releases/{release_id}")
    assert response is not None
    policy = await response.header_value("content-security-policy") or ""
    assert "script-src 'self'" in policy
    assert "frame-ancestors 'none'" in policy
    assert await response.header_value("x-content-type-options") == "nosniff"

    await expect(page.locator(f"#head-{release_id} h1")).to_contain_text(f"Fall {MARKUP}")
    await expect(page.locator(f"#notes-{release_id} h4")).to_have_text("Fall notes")
    await expect(page.locator(".description")).to_have_text("<script>window.__pwned=6</script>")
    notes = page.locator(f"#notes-{release_id} .markdown")
    await expect(notes).to_contain_text("<script>window.__pwned = 2</script>")
    await expect(notes.locator("strong")).to_have_text("bold")
    await expect(notes.get_by_role("link", name="a real link")).to_have_attribute(
        "rel", re.compile("noopener")
    )
    assert await notes.get_by_role("link", name="click me").count() == 0
    assert await notes.get_by_role("link", name="raw").count() == 0
    await notes.get_by_text("click me").click()
    await nothing_ran(page)

    # An operator's reason and the services' answers, live on the open page.
    cancel = CancelRelease(release_id=release_id, reason=f"bad data {MARKUP}")
    assert (await admin.request(cancel)).ok
    await expect(page.locator(f"#head-{release_id} .reason")).to_contain_text(MARKUP, timeout=LIVE_MS)
    await expect(page.locator(f"#task-{release_id}-portal .message")).to_have_text(
        f"portal discarded {MARKUP}", timeout=LIVE_MS
    )
    await nothing_ran(page)
    await page.goto(f"{dashboard.url}/")
    await expect(page.locator(f"#row-{release_id}")).to_contain_text(f"Fall {MARKUP}")
    await nothing_ran(page)


async def test_an_unknown_release_is_a_404_page(
    context: BrowserContext, start_dashboard: StartDashboard, coordinator: Running
) -> None:
    dashboard = await start_dashboard()
    page = await context.new_page()
    for path, status, text in [
        ("/releases/RE_00000000", 404, "unknown release RE_00000000"),
        ("/releases/not-a-release", 404, "a release id is RE_"),
        ("/releases/RE_00000000/publish", 403, "read-only"),
        ("/no/such/page", 404, "no such page"),
        ("/?state=exploded", 400, "unknown state 'exploded'"),
        ("/?cursor=garbage", 400, "refused"),
    ]:
        response = await page.goto(f"{dashboard.url}{path}")
        assert response is not None
        assert response.status == status, path
        await expect(page.locator("main")).to_contain_text(text)
        assert "Traceback" not in await page.content()
    unknown_stream = await page.request.get(f"{dashboard.url}/live?release=bogus")
    assert unknown_stream.status == 400
