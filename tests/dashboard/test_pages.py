"""The services and studies pages, a phone's screen, and the keyboard, in a real browser."""

from __future__ import annotations

from playwright.async_api import Browser, BrowserContext, expect

from rc_cli.client import AdminClient
from schemas.enums import ReleaseState
from schemas.messages import CreateRelease, PublishRelease, ReleaseResult, ShowRelease
from tests.coordinator.fixtures import SERVICES
from tests.coordinator.simulated import SimulatedService
from tests.dashboard.conftest import StartDashboard, wait_for


async def released(admin: AdminClient, *, publish: bool) -> str:
    answer = await admin.request(CreateRelease(name="Winter", studies=("SD_ONE", "SD_TWO")))
    assert isinstance(answer.result, ReleaseResult), answer.error
    release_id = answer.result.release.id
    targets = [ReleaseState.STAGED, ReleaseState.PUBLISHED] if publish else [ReleaseState.STAGED]
    for target in targets:

        async def reached(state: ReleaseState = target) -> bool:
            shown = await admin.request(ShowRelease(release_id=release_id, events=0))
            assert isinstance(shown.result, ReleaseResult)
            return shown.result.release.state is state

        await wait_for(reached, 30, f"{release_id} {target}")
        if target is ReleaseState.STAGED and publish:
            assert (await admin.request(PublishRelease(release_id=release_id))).ok
    return release_id


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
