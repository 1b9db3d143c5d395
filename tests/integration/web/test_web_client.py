"""The web client (chatserver/webclient, built from clients/typescript) in a real browser:
Debian's headless Chromium driven by Playwright. Two users sign up in two browser contexts and
chat; a reload shows the history; the server restarts mid-conversation and both pages show
"reconnecting…", then resume with nothing lost. Screenshots of the main screens are saved in
``$HYPERSEND_SCREENSHOTS`` (default: the test's temporary directory).
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from hypersend_client import Client
from playwright.async_api import Browser, Locator, Page, async_playwright, expect

from tests.fixtures.chat import ChatServerFactory, ChatServerProcess

pytestmark = pytest.mark.integration

PASSWORD = "correct horse 1"
# Generous: a loaded 2-core machine, and a reconnect that waits for a restarting server.
WAIT_MS = 60_000


def chromium_path() -> str:
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    raise AssertionError("Debian's chromium is missing: ./dev setup installs it")


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=chromium_path(),
            headless=True,
            # Root in a container has no user namespace for Chromium's sandbox.
            args=["--no-sandbox"] if os.geteuid() == 0 else [],
        )
        yield launched
        await launched.close()


@pytest.fixture
def screenshots(tmp_path: Path) -> Path:
    target = Path(os.environ.get("HYPERSEND_SCREENSHOTS") or tmp_path / "screenshots")
    target.mkdir(parents=True, exist_ok=True)
    return target


async def open_page(browser: Browser, server: ChatServerProcess) -> Page:
    context = await browser.new_context(viewport={"width": 1000, "height": 640})
    page = await context.new_page()
    await page.goto(server.url + "/")  # redirects to /app/
    return page


async def sign_up(page: Page, username: str) -> None:
    await page.get_by_label("Username", exact=True).fill(username)
    await page.get_by_label("Password").fill(PASSWORD)
    await page.get_by_role("button", name="Sign up").click()
    await expect(page.get_by_role("status").first).to_have_text("connected", timeout=WAIT_MS)


async def send(page: Page, text: str) -> None:
    # Keyboard only: type and press Enter.
    await page.get_by_label("Message", exact=True).fill(text)
    await page.get_by_label("Message", exact=True).press("Enter")


def messages(page: Page) -> Locator:
    return page.locator("#messages li[data-seq] .text")


async def test_two_browsers_chat_reload_and_survive_a_server_restart(
    chat_server_factory: ChatServerFactory, browser: Browser, screenshots: Path
) -> None:
    server = chat_server_factory.start(web_client=True)
    alice_name, bob_name = f"alice{secrets.token_hex(3)}", f"bob{secrets.token_hex(3)}"
    alice, bob = await open_page(browser, server), await open_page(browser, server)
    await alice.screenshot(path=screenshots / "1-sign-in.png")
    await sign_up(alice, alice_name)
    await sign_up(bob, bob_name)

    # Alice creates a room and adds Bob; Bob's room list gets it live (room_added).
    await alice.get_by_label("New room", exact=True).fill("lunch")
    await alice.get_by_label("New room", exact=True).press("Enter")
    await expect(alice.locator("#room-title")).to_have_text("lunch", timeout=WAIT_MS)
    await alice.get_by_label("Add member (username)").fill(bob_name)
    await alice.get_by_role("button", name="Add", exact=True).click()
    await expect(alice.locator("#member-result")).to_have_text(f"added {bob_name}")
    await bob.get_by_role("button", name="lunch").click()
    await expect(bob.locator("#room-title")).to_have_text("lunch", timeout=WAIT_MS)

    await send(alice, "hi bob")
    await expect(messages(bob)).to_have_text(["hi bob"], timeout=WAIT_MS)
    # Bob types: Alice sees the indicator before his message arrives.
    await bob.get_by_label("Message", exact=True).press_sequentially("hi al")
    await expect(alice.locator("#typing")).to_have_text(f"{bob_name} is typing…", timeout=WAIT_MS)
    await alice.screenshot(path=screenshots / "2-typing.png")
    await bob.get_by_label("Message", exact=True).press_sequentially("ice")
    await bob.get_by_label("Message", exact=True).press("Enter")
    conversation = ["hi bob", "hi alice"]
    await expect(messages(alice)).to_have_text(conversation, timeout=WAIT_MS)
    await alice.screenshot(path=screenshots / "3-chat.png")

    # A reload keeps the session and shows the history.
    await bob.reload()
    await expect(bob.get_by_role("status").first).to_have_text("connected", timeout=WAIT_MS)
    await expect(messages(bob)).to_have_text(conversation, timeout=WAIT_MS)
    await bob.screenshot(path=screenshots / "4-after-reload.png")

    # The server restarts mid-conversation: both pages say so, Alice writes meanwhile.
    await asyncio.to_thread(server.stop)
    for page in (alice, bob):
        await expect(page.get_by_role("status").first).to_have_text(
            "reconnecting…", timeout=WAIT_MS
        )
    await send(alice, "written while the server was down")
    await expect(alice.locator("#messages li.pending")).to_have_count(1)
    await alice.screenshot(path=screenshots / "5-reconnecting.png")
    await asyncio.to_thread(server.start)
    for page in (alice, bob):
        await expect(page.get_by_role("status").first).to_have_text("connected", timeout=WAIT_MS)
    await send(bob, "back again")
    conversation += ["written while the server was down", "back again"]
    for page in (alice, bob):
        await expect(messages(page)).to_have_text(conversation, timeout=WAIT_MS)
        await expect(page.locator("#messages li.pending")).to_have_count(0)
    await alice.screenshot(path=screenshots / "6-resumed.png")
    print(f"screenshots in {screenshots}")


async def test_the_web_client_is_off_by_default(chat_server_factory: ChatServerFactory) -> None:
    off = chat_server_factory.start()
    on = chat_server_factory.start(web_client=True)
    async with httpx.AsyncClient(trust_env=False, timeout=20) as http:
        assert (await http.get(f"{off.url}/app/")).status_code == 404
        assert (await http.get(f"{off.url}/")).status_code == 404
        root = await http.get(f"{on.url}/")
        assert (root.status_code, root.headers["location"]) == (307, "/app/")
        page = await http.get(f"{on.url}/app/")
        assert page.status_code == 200
        assert '<label for="text">Message</label>' in page.text


async def test_history_scrolls_back_page_by_page(
    chat_server_factory: ChatServerFactory, browser: Browser
) -> None:
    # 120 messages stored through the Python client; the page shows the newest 50 and loads
    # older ones as the list is scrolled to its top (50 per page).
    server = chat_server_factory.start(web_client=True, rate_limit_per_minute=100_000)
    writer = Client(server.url)
    await writer.register(f"w{secrets.token_hex(4)}", PASSWORD)
    room = await writer.rest.create_group("archive", [])
    for i in range(1, 121):
        await writer.rest.post_message(room.id, f"old {i}")
    await writer.close()
    assert writer.rest.user is not None
    page = await open_page(browser, server)
    await page.get_by_label("Username", exact=True).fill(writer.rest.user.username)
    await page.get_by_label("Password").fill(PASSWORD)
    await page.get_by_label("Password").press("Enter")  # the form submits: log in
    shown = messages(page)
    await expect(shown).to_have_count(50, timeout=WAIT_MS)
    await expect(shown.last).to_have_text("old 120")
    for count in (100, 120):
        await page.locator("#messages").evaluate("list => { list.scrollTop = 0 }")
        await expect(shown).to_have_count(count, timeout=WAIT_MS)
    await expect(shown.first).to_have_text("old 1")
