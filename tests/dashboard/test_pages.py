"""The pages in a real browser: the releases list's state filter and its pages, the audit trail's pages,
the services and studies pages, a phone's screen, and the keyboard."""

from __future__ import annotations

import re
import urllib.parse

from playwright.async_api import Browser, BrowserContext, Locator, Page, expect

from rc_cli.client import AdminClient
from schemas.enums import ReleaseState
from schemas.messages import (
    CancelRelease,
    CreateRelease,
    EventPage,
    ListEvents,
    PublishRelease,
    ReleaseResult,
    ShowRelease,
)
from tests.coordinator.fixtures import SERVICES, Running
from tests.coordinator.simulated import SimulatedService
from tests.dashboard.conftest import StartDashboard, StartService, wait_for

#: More pages than any test here has: a link to older ones past this is a pager going round in circles.
MOST_PAGES = 10


async def create(admin: AdminClient, name: str = "Winter") -> str:
    answer = await admin.request(CreateRelease(name=name, studies=("SD_ONE", "SD_TWO")))
    assert isinstance(answer.result, ReleaseResult), answer.error
    return answer.result.release.id


async def reach(admin: AdminClient, release_id: str, state: ReleaseState) -> None:
    async def reached() -> bool:
        shown = await admin.request(ShowRelease(release_id=release_id, events=0))
        assert isinstance(shown.result, ReleaseResult)
        return shown.result.release.state is state

    await wait_for(reached, 30, f"{release_id} {state}")


async def released(admin: AdminClient, *, publish: bool) -> str:
    release_id = await create(admin)
    await reach(admin, release_id, ReleaseState.STAGED)
    if publish:
        assert (await admin.request(PublishRelease(release_id=release_id))).ok
        await reach(admin, release_id, ReleaseState.PUBLISHED)
    return release_id


async def rows_shown(page: Page) -> list[str]:
    """The release ids of the list's rows, top to bottom."""
    ids: list[str] = await page.locator("#release-rows tr[id^='row-']").evaluate_all(
        "rows => rows.map(row => row.id.slice(4))"
    )
    return ids


async def follow(page: Page, link: str) -> None:
    """Click the link named ``link`` and wait until the page it leads to is there."""
    target = page.get_by_role("link", name=link)
    href = await target.get_attribute("href")
    assert href is not None
    await target.click()
    await page.wait_for_url(urllib.parse.urljoin(page.url, href))


async def follow_older(page: Page, link: str) -> list[list[str]]:
    """Every page from this one on, following the ``link`` to older ones until there is none."""
    pages = [await rows_shown(page)]
    while await page.get_by_role("link", name=link).count():
        assert len(pages) < MOST_PAGES, f"still an {link!r} link after {pages}"
        await follow(page, link)
        pages.append(await rows_shown(page))
    return pages


async def test_the_state_filter_and_the_older_releases(
    context: BrowserContext,
    start_dashboard: StartDashboard,
    ready: list[SimulatedService],
    admin: AdminClient,
) -> None:
    """Five releases, two of them canceled, two to a page: each page shows the next ones, newest first,
    none twice and none left out; a filter keeps to its state on every page and in the select."""
    made = [await create(admin, f"Winter {n}") for n in range(5)]
    for release_id in made:
        await reach(admin, release_id, ReleaseState.STAGED)
    for release_id in made[1::2]:
        assert (await admin.request(CancelRelease(release_id=release_id, reason="not needed"))).ok
        await reach(admin, release_id, ReleaseState.CANCELED)
    newest_first = made[::-1]
    staged = [release_id for release_id in newest_first if release_id not in made[1::2]]
    dashboard = await start_dashboard(page_size=2)
    page = await context.new_page()

    await page.goto(f"{dashboard.url}/")
    in_pages_of_two = [newest_first[0:2], newest_first[2:4], newest_first[4:]]
    assert await follow_older(page, "Older releases") == in_pages_of_two
    await follow(page, "Newest")
    assert page.url == f"{dashboard.url}/"
    assert await rows_shown(page) == newest_first[0:2]

    await page.get_by_label("State").select_option("staged")
    await page.get_by_role("button", name="Filter").click()
    await page.wait_for_url(re.compile(r"/\?state=staged"))
    assert await follow_older(page, "Older releases") == [staged[0:2], staged[2:]]
    await expect(page.get_by_label("State")).to_have_value("staged")  # on the older page too
    await expect(page.locator("#release-rows .badge")).to_have_text(["staged"])
    await follow(page, "Newest")
    assert page.url == f"{dashboard.url}/?state=staged"
    await expect(page.locator("#release-rows .badge")).to_have_text(["staged", "staged"])
    await expect(page.get_by_role("link", name="Newest")).to_have_count(0)

    # Exactly one page of canceled ones: no link to an empty page of older ones.
    await page.goto(f"{dashboard.url}/?state=canceled")
    assert await rows_shown(page) == [made[3], made[1]]
    await expect(page.get_by_role("link", name="Older releases")).to_have_count(0)
    await page.goto(f"{dashboard.url}/?state=published")
    assert await rows_shown(page) == []
    await expect(page.locator("#no-releases")).to_contain_text("No releases match these filters")


async def test_the_audit_trail_in_pages(
    context: BrowserContext,
    start_dashboard: StartDashboard,
    ready: list[SimulatedService],
    admin: AdminClient,
) -> None:
    """A published release's audit trail, four events to a page: followed to its end, the pages show
    every event of the coordinator's trail once, newest first, and lead back to the newest."""
    release_id = await released(admin, publish=True)
    answer = await admin.request(ListEvents(release_id=release_id, limit=500))
    assert isinstance(answer.result, EventPage), answer.error
    trail = [(e.kind.value, e.service or "", e.reason) for e in answer.result.events]
    assert len(trail) > 8, "enough events for three pages"
    dashboard = await start_dashboard(page_size=4)
    page = await context.new_page()
    await page.goto(f"{dashboard.url}/releases/{release_id}")

    shown: list[tuple[str, str, str]] = []
    pages = 0
    while True:
        pages += 1
        assert pages <= MOST_PAGES, f"still more events after {shown}"
        rows = page.locator("#audit tbody tr")
        for row in await rows.all():
            cells = [await row.locator(f"[data-label={label}]").inner_text() for label in LABELS]
            shown.append((cells[0], cells[1], cells[2]))
        older = page.get_by_role("link", name="Older events")
        if not await older.count():
            break
        assert await rows.count() == 4
        await follow(page, "Older events")
        await expect(page.get_by_role("link", name="Newest events")).to_be_visible()
    assert shown == trail
    assert pages == -(-len(trail) // 4)
    await follow(page, "Newest events")
    await expect(page.locator("#audit tbody tr")).to_have_count(4)
    await expect(page.get_by_role("link", name="Newest events")).to_have_count(0)


LABELS = ("Kind", "Service", "Reason")


async def test_services_and_studies(
    context: BrowserContext,
    start_dashboard: StartDashboard,
    ready: list[SimulatedService],
    admin: AdminClient,
) -> None:
    release_id = await released(admin, publish=True)
    dashboard = await start_dashboard()
    page = await context.new_page()

    await page.goto(f"{dashboard.url}/services")
    rows = page.locator("table.services tbody tr")
    await expect(rows).to_have_count(len(SERVICES))
    for name in SERVICES:
        row = rows.filter(has=page.get_by_role("rowheader", name=name))
        await expect(row.locator("[data-label=Required]")).to_have_text("yes")
        await expect(row.locator("[data-label=Health] .badge")).to_have_text("healthy")
        await expect(row.locator("[data-label=Consumers]")).to_have_text("1")  # from the broker itself
        await expect(row.locator("[data-label='Last releases']")).to_contain_text(release_id)

    await page.get_by_role("link", name="Studies").click()
    await page.wait_for_url(f"{dashboard.url}/studies")
    study = page.locator("table.studies tbody tr").filter(has=page.get_by_role("rowheader", name="SD_ONE"))
    await expect(study.locator("[data-label='Latest release']")).to_contain_text(release_id)
    await expect(study.locator("[data-label='Latest release'] .badge")).to_have_text("published")
    await expect(study.locator("[data-label='Last published']")).to_contain_text("0.1.0")
    await study.get_by_role("link", name="SD_ONE").click()
    await expect(page.locator(f"#row-{release_id}")).to_be_visible()
    await expect(page.get_by_label("Study")).to_have_value("SD_ONE")


async def test_a_service_is_silent_after_the_heartbeat_timeout(
    context: BrowserContext,
    start_dashboard: StartDashboard,
    coordinator: Running,
    services: StartService,
) -> None:
    """One service beats five times a second, the other once and then no more (it still consumes). With
    ``RC_HEARTBEAT_TIMEOUT`` at 2 s the second is shown silent once its heartbeat is older than that,
    while a dashboard with the default (30 s) still shows it healthy; the first stays healthy."""
    await services("portal")
    quiet = await services("search-index", heartbeat=None)
    await quiet.beat()
    strict = await start_dashboard(heartbeat_timeout=2)
    default = await start_dashboard()
    page = await context.new_page()

    def health(name: str) -> Locator:
        row = page.locator("table.services tbody tr").filter(has=page.get_by_role("rowheader", name=name))
        return row.locator("[data-label=Health]")

    async def silent() -> bool:
        await page.goto(f"{strict.url}/services")
        return await health("search-index").locator(".badge").inner_text() == "silent"

    await wait_for(silent, 15, "search-index silent after 2 s without a heartbeat")
    await expect(page.locator("#silent-after")).to_have_text("2 s")
    await expect(health("search-index")).to_contain_text(re.compile(r"no heartbeat for [2-9]s"))
    await expect(health("portal").locator(".badge")).to_have_text("healthy")
    await page.goto(f"{default.url}/services")
    await expect(page.locator("#silent-after")).to_have_text("30 s")
    await expect(health("search-index").locator(".badge")).to_have_text("healthy")


async def test_a_phone_and_the_keyboard(
    browser: Browser,
    start_dashboard: StartDashboard,
    ready: list[SimulatedService],
    admin: AdminClient,
) -> None:
    release_id = await released(admin, publish=False)
    dashboard = await start_dashboard()
    phone = await browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    try:
        page = await phone.new_page()
        for path in ("/", f"/releases/{release_id}", "/services", "/studies"):
            await page.goto(f"{dashboard.url}{path}")
            overflow = await page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
            assert overflow <= 0, f"{path} is {overflow}px wider than a phone"
        await page.goto(f"{dashboard.url}/releases/{release_id}")
        badge = page.locator(f"#head-{release_id} .state-line .badge").first
        await expect(badge).to_have_text("staged")  # the state is written, not only coloured
        await expect(page.locator(f"#task-{release_id}-portal [data-label=State]")).to_contain_text("staged")

        await page.keyboard.press("Tab")
        skip = page.get_by_role("link", name="Skip to the content")
        await expect(skip).to_be_focused()
        await page.keyboard.press("Enter")
        assert await page.evaluate("document.activeElement.id") == "main"
        await page.keyboard.press("Tab")
        await expect(page.get_by_role("link", name="Releases", exact=True).last).to_be_focused()
        await page.keyboard.press("Enter")
        await page.wait_for_url(f"{dashboard.url}/")
        await expect(page.locator(f"#row-{release_id}")).to_be_visible()
    finally:
        await phone.close()
