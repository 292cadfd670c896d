"""Take docs/screenshot.png (the watch page in use: likes, comments, presence), docs/screenshot-home.png (the
home page's cards) and docs/screenshot-mobile.png (the watch page on a 390x844 phone), on a throwaway database.

Run: .venv/bin/python scripts/screenshot.py
"""

import json
import sys
import tempfile
from pathlib import Path

from playwright.sync_api import expect, sync_playwright

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.browser.conftest import CHROMIUM, FAST_PRESENCE, LAUNCH_ARGS, sign_in  # noqa: E402
from tests.system.harness import Worker, base_env, run_django  # noqa: E402

SETUP = """
import json
from django.core.management import call_command
call_command("migrate", verbosity=0)
call_command("seed_demo", verbosity=0)
from django.contrib.auth.models import User
for user in User.objects.all():
    user.set_password("pw-" + user.username)
    user.save()
from likes.models import LiveVideo
print(json.dumps(LiveVideo.objects.filter(status="live").values_list("slug", flat=True).first()))
"""


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        env = base_env(Path(tmp), **FAST_PRESENCE)
        slug = json.loads(run_django(env, SETUP).strip().splitlines()[-1])
        worker = Worker(env, name="screenshot").start()
        try:
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=LAUNCH_ARGS)
                alice = sign_in(browser.new_context(viewport={"width": 1280, "height": 760}), worker.url, "alice")
                bob = sign_in(browser.new_context(), worker.url, "bob")
                for page in (alice, bob):
                    page.goto(f"{worker.url}/videos/{slug}/")
                    expect(page.get_by_role("status", name="Connection")).to_have_text("live", timeout=10_000)
                for text in ("Great stream!", "Hello from Bob, the hearts are for you"):
                    bob.get_by_role("textbox", name="Comment").fill(text)
                    bob.get_by_role("button", name="Send").click()
                expect(alice.get_by_role("list", name="Viewers").get_by_label("Bob, online")).to_be_visible()
                for _ in range(8):
                    bob.get_by_role("button", name="Like").click()
                alice.wait_for_timeout(600)  # let the hearts float up a little for the picture
                alice.screenshot(path=str(ROOT / "docs" / "screenshot.png"))
                phone = sign_in(
                    browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True),
                    worker.url,
                    "carol",
                )
                phone.goto(f"{worker.url}/videos/{slug}/")
                expect(phone.get_by_role("status", name="Connection")).to_have_text("live", timeout=10_000)
                expect(phone.get_by_role("list", name="Comments")).to_contain_text("hearts are for you")
                phone.screenshot(path=str(ROOT / "docs" / "screenshot-mobile.png"))
                alice.goto(f"{worker.url}/")
                expect(alice.get_by_role("status", name="Connection")).to_have_text("counts live", timeout=10_000)
                alice.screenshot(path=str(ROOT / "docs" / "screenshot-home.png"))
                browser.close()
        finally:
            worker.stop()
    print("wrote docs/screenshot.png, docs/screenshot-home.png, docs/screenshot-mobile.png")  # noqa: T201


if __name__ == "__main__":
    main()
