"""Page objects for the hub's pages and JupyterLab, over accessible locators where the markup allows."""

from __future__ import annotations

import re
import time
import weakref
from pathlib import Path
from urllib.parse import urlsplit

from playwright.sync_api import Error, Locator, Page, expect

from ..support.helpers import wait_until

USERNAME = re.compile(r"^Username:?$")
PASSWORD = re.compile(r"^Password:?$")


IF_INET6 = Path("/proc/net/if_inet6")
IFA_F_TENTATIVE = 0x40
ERROR_PAGE = "chrome-error:"


def tentative_addresses() -> list[str]:
    """The host's IPv6 addresses still in duplicate address detection (`ip -6 addr` says "tentative")."""
    if not IF_INET6.exists():  # IPv6 is off: no address events to wait for
        return []
    rows = (line.split() for line in IF_INET6.read_text().splitlines())
    return [f"{row[5]}:{row[0]}" for row in rows if len(row) == 6 and int(row[4], 16) & IFA_F_TENTATIVE]


def settle_network() -> None:
    """Wait until no new container interface is still getting its link-local address.

    Chromium shares the Docker host's network namespace here. When a container starts, its host-side veth
    gets an IPv6 address about a second later, and Chromium fails whatever connection it is opening at that
    moment with net::ERR_NETWORK_CHANGED (a browser on another machine never sees this).
    """
    wait_until(lambda: not tentative_addresses() or None, 15, "host IPv6 addresses to leave DAD", interval=0.1)


# What a navigation reports when something else moved the page under it: a container's interface (see
# settle_network), or the page's own script navigating at the same moment (the spawn-pending page goes to the
# lab when it is ready, so a reload sent then finds the old document detached).
NAVIGATION_LOST = ("ERR_NETWORK_CHANGED", "Not attached to an active page", "interrupted by another navigation")


_LOSSES: weakref.WeakKeyDictionary[Page, list[str]] = weakref.WeakKeyDictionary()


def network_losses(page: Page) -> list[str]:
    """The URLs of the page's requests that failed with ERR_NETWORK_CHANGED, recorded from the first call on.

    A document's own load succeeds or fails where the test sees it, but the scripts that JupyterLab loads
    after it fail silently: the lab then stays blank (ChunkLoadError) and only a reload brings it up.
    """
    lost = _LOSSES.get(page)
    if lost is None:
        lost = _LOSSES[page] = []

        def record(request) -> None:
            if request.failure and "ERR_NETWORK_CHANGED" in request.failure:
                lost.append(request.url)

        page.on("requestfailed", record)
    return lost


def reload_settled(page: Page) -> None:
    """Reload once the host network is quiet; a reload lost to another navigation is left to the caller's next wait."""
    settle_network()
    try:
        page.reload()
    except Error as error:
        if not any(cause in error.message for cause in NAVIGATION_LOST):
            raise


def navigate(page: Page, url: str, attempts: int = 3):
    """`page.goto` once the host network is quiet, again if a container's interface changed it meanwhile: Chromium
    says so as ERR_NETWORK_CHANGED, or, when it happens during a redirect (the hub's logout sending the browser to
    the identity provider), as the navigation "interrupted by another navigation to chrome-error://"."""
    for _ in range(attempts - 1):
        settle_network()
        try:
            return page.goto(url)
        except Error as error:
            if "ERR_NETWORK_CHANGED" not in error.message and f'navigation to "{ERROR_PAGE}' not in error.message:
                raise
    settle_network()
    return page.goto(url)  # the last attempt fails as it fails


def wait_for_lab(page: Page, attempts: int = 3) -> None:
    """Follow a spawn's redirects until JupyterLab's URL; reload when an interface change broke a step.

    Each lab has its own network: its bridge gets an address on the host as the lab starts, and Chromium,
    sharing the host's network namespace here, fails the request in flight (see settle_network).
    """
    for attempt in range(attempts):
        try:
            page.wait_for_url(re.compile(rf"/user/[^/]+/lab|^{ERROR_PAGE}"), timeout=90_000)
        except Error as error:
            if "ERR_NETWORK_CHANGED" not in error.message or attempt == attempts - 1:
                raise
        else:
            if not page.url.startswith(ERROR_PAGE):
                return
            if attempt == attempts - 1:
                break
        reload_settled(page)  # the next wait_for_url follows wherever the page went instead
    page.wait_for_url(re.compile(r"/user/[^/]+/lab"), timeout=60_000)


class HubPage:
    def __init__(self, page: Page, base: str) -> None:
        self.page = page
        self.base = base
        network_losses(page)  # from here on: the lab that a login or a start opens may lose a script

    def open(self, path: str):
        return navigate(self.page, self.base + path)

    def alert(self) -> Locator:
        return self.page.get_by_role("alert")


class SignupPage(HubPage):
    def signup(self, username: str, password: str, bootstrap_secret: str | None = None) -> None:
        self.open("hub/signup")
        self.page.get_by_label("Username").fill(username)
        self.page.get_by_label("Password", exact=True).fill(password)
        self.page.get_by_label("Confirm password").fill(password)
        if bootstrap_secret is not None:
            self.page.get_by_label(re.compile("^Bootstrap secret")).fill(bootstrap_secret)
        self.page.get_by_role("button", name="Create User").click()


class LoginPage(HubPage):
    def login(self, username: str, password: str) -> None:
        self.open("hub/login")
        self.page.get_by_label(USERNAME).fill(username)
        self.page.get_by_label(PASSWORD).fill(password)
        try:
            with self.page.expect_navigation(timeout=60_000):
                self.page.get_by_role("button", name="Sign In").click()
        except Error as error:  # the spawn that login starts brought up an interface (see settle_network)
            if "ERR_NETWORK_CHANGED" not in error.message:
                raise
        if self.page.url.startswith(ERROR_PAGE):
            navigate(self.page, self.base + "hub/spawn")  # where the successful login was redirecting
        # JupyterHub starts the server at login and redirects into it: wait for that, so that no later
        # navigation of the test races the redirect (a refused login stays on /hub/login)
        if urlsplit(self.page.url).path.endswith("/hub/spawn") and self.page.locator("#spawn_form").count() == 0:
            wait_for_lab(self.page)


class AuthorizePage(HubPage):
    def approve(self, username: str) -> None:
        self.open("hub/authorize")
        self.page.get_by_role("button", name=f"Approve {username}", exact=True).click()
        expect(self.page.get_by_role("button", name=f"Unapprove {username}", exact=True)).to_be_visible()

    def discard(self, username: str) -> None:
        """Discard a pending account: the admin types its name, as the page asks, then confirms."""
        self.open("hub/authorize")
        self.page.get_by_label(f"Type {username} to confirm the discard", exact=True).fill(username)
        self.page.get_by_role("button", name=f"Discard {username}", exact=True).click()
        expect(self.page.get_by_role("status")).to_contain_text(f"{username}: discard done")

    def set_password(self, username: str, password: str) -> None:
        self.open("hub/authorize")
        self.page.get_by_role("button", name=f"Set password of {username}", exact=True).click()
        self.page.get_by_label(re.compile("^New Password", re.I)).first.fill(password)
        self.page.locator("input[type=password]").nth(1).fill(password)
        self.page.get_by_role("button", name=re.compile("Change Password", re.I)).click()


class ChangePasswordPage(HubPage):
    def change(self, old: str, new: str) -> None:
        """Fill and send the change-password form where the page is (a made or reset account is sent there)."""
        self.page.get_by_label("Old password:").fill(old)
        self.page.get_by_label("New password:", exact=True).fill(new)
        self.page.get_by_label("Confirm new password:").fill(new)
        self.page.get_by_role("button", name="Change Password").click()


class PeoplePage(HubPage):
    def create(self, text: str) -> dict[str, str]:
        """Paste a batch and make it; the passphrases the page shows once, by name."""
        self.open("hub/hubforge/people")
        self.page.get_by_label("Names").fill(text)
        self.page.get_by_role("button", name="Create accounts").click()
        expect(self.alert()).to_contain_text("account(s) made", timeout=60_000)
        rows = self.page.locator("#batch-created tbody tr")
        return {
            rows.nth(i).get_attribute("data-user"): rows.nth(i).locator(".batch-passphrase").inner_text()
            for i in range(rows.count())
        }


class AuditPage(HubPage):
    def filter(self, user: str = "", action: str = "") -> None:
        self.open("hub/hubforge/audit")
        self.page.get_by_label("User").fill(user)
        self.page.get_by_label("Action").select_option(action)
        with self.page.expect_navigation():
            self.page.get_by_role("button", name="Filter").click()

    def actions(self) -> list[str]:
        """The listed records' actions, newest first."""
        return self.page.locator("table tbody tr td:nth-child(3)").all_inner_texts()


class ActivityPage(HubPage):
    def goto(self) -> None:
        self.open("hub/hubforge/activity")

    def row(self, name: str) -> Locator:
        return self.page.locator(f'tr[data-user="{name}"]')

    def interval_ms(self) -> int:
        """The page's own collection interval, in milliseconds."""
        return int(self.page.locator("[data-interval]").first.get_attribute("data-interval")) * 1000


class HomePage(HubPage):
    def goto(self) -> None:
        self.open("hub/home")

    def start(self) -> None:
        self.goto()
        self.page.get_by_role("button", name=re.compile(r"^(Start )?My Server$")).click()
        wait_for_lab(self.page)

    def stop(self) -> None:
        self.goto()
        self.page.get_by_role("button", name="Stop My Server").click()
        expect(self.page.get_by_role("button", name="Start My Server")).to_be_visible(timeout=60_000)

    def restart(self) -> None:
        """Restart from the home page, and wait for the reload that the page does itself once it says so.

        Without that wait, the test's next navigation races the page's own (800 ms after "Restarted") and
        Chromium aborts one of them ("interrupted by another navigation").
        """
        self.goto()
        self.page.once("dialog", lambda dialog: dialog.accept())
        try:
            with self.page.expect_navigation(timeout=120_000):
                self.page.get_by_role("button", name="Restart server").click()
                expect(self.page.get_by_role("status")).to_contain_text("Restarted", timeout=90_000)
        except Error as error:  # the restart brought up the lab's interface as the page reloaded
            if "ERR_NETWORK_CHANGED" not in error.message:
                raise

    def manage_volumes(self, reload: bool = True) -> None:
        if reload:
            self.goto()
        self.page.get_by_role("button", name="Manage volumes").click()


class VolumesPage(HubPage):
    def reset(self, kinds: list[str]) -> Locator:
        for kind in kinds:
            self.page.get_by_label(kind, exact=True).check()
        self.page.once("dialog", lambda dialog: dialog.accept())
        self.page.get_by_role("button", name="Reset selected volumes").click()
        return self.page.get_by_role("status")


class AdminPage(HubPage):
    def add_user(self, username: str) -> None:
        self.open("hub/admin")
        self.page.get_by_role("button", name=re.compile("Add Users", re.I)).click()
        self.page.get_by_role("textbox").first.fill(username)
        self.page.get_by_role("button", name=re.compile("Add Users", re.I)).last.click()
        expect(self.page.get_by_test_id(f"user-name-div-{username}")).to_be_visible()


class BroadcastPage(HubPage):
    def send(
        self,
        message: str,
        type_: str = "default",
        auto_close: str = "never: keep until dismissed",
        recipients: list[str] | None = None,
    ) -> Locator:
        self.open("hub/hubforge/broadcast")
        self.page.get_by_label("Message").fill(message)
        self.page.get_by_label("Type").select_option(type_)
        self.page.get_by_label("Close automatically").select_option(label=auto_close)
        if recipients is None:
            self.page.get_by_label(re.compile("All running servers")).check()
        else:
            self.page.get_by_label("Chosen users").check()
            for name in recipients:
                self.page.get_by_label(name, exact=True).check()
        self.page.get_by_role("button", name="Send").click()
        return self.page.get_by_role("status")


class JupyterLab:
    def __init__(self, page: Page, base: str, username: str) -> None:
        self.page = page
        self.url = f"{base}user/{username}/lab"
        network_losses(page)

    def open(self) -> None:
        navigate(self.page, self.url)
        self.wait_ready()

    def wait_ready(self, timeout: float = 60, reloads: int = 2) -> None:
        """Wait for JupyterLab's main area; reload it when one of its requests was lost to a network change.

        A new lab's interface comes up on the host while its page loads, and Chromium, sharing the host's
        network namespace here, fails the script chunks in flight (see settle_network). A lab that is
        really broken still fails: after `reloads` reloads, or `timeout` seconds with nothing lost.
        """
        lost = network_losses(self.page)
        panel = self.page.locator("#jp-main-dock-panel")
        deadline = time.monotonic() + timeout
        while True:
            try:
                expect(panel).to_be_visible(timeout=5_000)
                lost.clear()  # what was lost before the lab came up no longer matters
                return
            except AssertionError:
                if lost and reloads > 0:
                    reloads -= 1
                    lost.clear()
                    reload_settled(self.page)
                    deadline = time.monotonic() + timeout
                elif time.monotonic() >= deadline:
                    raise

    def new_notebook(self) -> None:
        self.page.locator('.jp-LauncherCard[data-category="Notebook"]').first.click()
        expect(self.page.get_by_role("tab").filter(has_text=re.compile(r"\.ipynb"))).to_be_visible()
        # run only once the kernel is connected: a cell sent earlier is dropped, not queued
        expect(self.page.get_by_text(re.compile(r"Python 3 \(ipykernel\) \| Idle"))).to_be_visible(timeout=60_000)

    def run(self, code: str) -> Locator:
        editor = self.page.locator(".jp-Notebook .jp-Cell .cm-content").last
        editor.click()
        editor.fill(code)
        self.page.keyboard.press("Shift+Enter")
        return self.page.locator(".jp-OutputArea-output").first

    def notification(self, text: str) -> Locator:
        return self.page.locator(".Toastify__toast").filter(has_text=text)


class PoliciesPage(HubPage):
    """/hub/hubforge/policies: groups with their policies; the form sets one group's."""

    def set_memory(self, group: str, memory: str) -> Locator:
        self.open("hub/hubforge/policies")
        edit = self.page.locator(f'button.policy-edit[data-group="{group}"]')
        if edit.count():
            edit.click()
        else:
            self.page.get_by_label("Group", exact=True).fill(group)
        self.page.get_by_label("Memory", exact=True).fill(memory)
        self.page.get_by_role("button", name="Save policy").click()
        return self.page.get_by_role("alert")
