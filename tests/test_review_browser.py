"""`selfiescope review` as a user meets it: the real command serving the real data layer over a
real imported dataset, driven by a real Chromium. After each action the manifest, the
``reviews`` table and the storage are checked. Takes the screenshots docs/review.md shows: into
docs/review/ with ``make screenshots`` (SELFIESCOPE_SCREENSHOTS=1), else into a temporary folder, so
a test run leaves the tracked files as they were."""

from __future__ import annotations

import io
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode

import pytest
from conftest import FACES, REPO
from review_helpers import Dataset, add_synthetic, build_dataset, manifest_rows

from selfiescope.testing.review_manifest import write_model
from test_review_app import HOLD_LOCK

pytest.importorskip("starlette")
from playwright.sync_api import expect  # noqa: E402

from selfiescope.core.browser_lookup import BrowserNotFound, find_chromium  # noqa: E402

try:
    CHROMIUM = find_chromium("auto")
except BrowserNotFound:
    pytest.skip("no Chromium (see scripts/ensure-chromium.sh)", allow_module_level=True)

pytestmark = [pytest.mark.browser, pytest.mark.faces, pytest.mark.slow]
SHOTS = (REPO / "docs" / "review" if os.environ.get("SELFIESCOPE_SCREENSHOTS") == "1"
         else Path(tempfile.mkdtemp(prefix="review-shots-")))
DEADLINE_MS = 60_000  # generous: a loaded 2-core machine
synthetic_jobs: list[str] = []  # the folders of the synthetic renderings the screenshots show


def read_line(stream: io.TextIOBase, deadline_s: float) -> str:
    """The stream's next line, or an AssertionError after ``deadline_s``."""
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: lines.put(stream.readline()), daemon=True).start()
    try:
        return lines.get(timeout=deadline_s)
    except queue.Empty:
        raise AssertionError(f"no line within {deadline_s} s") from None


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Dataset, str, subprocess.Popen]]:
    if not FACES.is_dir():
        pytest.skip(f"real face photos not available: {FACES}")
    ds = build_dataset(tmp_path, FACES)
    synthetic_jobs[:] = add_synthetic(ds.settings, tmp_path)
    env = {**os.environ, "PYTHONPATH": str(REPO), "DISPLAY": ":99"}  # --no-open must win over a display
    proc = subprocess.Popen([sys.executable, "-m", "selfiescope", "review", "--no-open", "--settings",
                             str(ds.settings_file)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = read_line(proc.stdout, 120)
        assert line.startswith(f"Reviewing {ds.root} at http://127.0.0.1:"), line
        yield ds, line.split(" at ", 1)[1].strip(), proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(30)


def review_rows(root: Path) -> list[tuple]:
    return manifest_rows(root, "SELECT content_hash, action, old, new, note, batch FROM reviews ORDER BY id")


def effective_label(root: Path, image: str) -> str:
    return manifest_rows(root, "SELECT coalesce(review_label, label) FROM images WHERE content_hash=?", (image,))[0][0]


def small_png(path: Path, data: bytes) -> None:
    """A screenshot for the docs, kept small: 60 % of the size, 128 colours."""
    from PIL import Image

    im = Image.open(io.BytesIO(data)).convert("RGB")
    im = im.resize((im.width * 3 // 5, im.height * 3 // 5), Image.LANCZOS)
    path.parent.mkdir(parents=True, exist_ok=True)
    im.quantize(128).save(path, optimize=True)


def thumbnails_shown(page: object, n: int) -> None:
    """Wait until the first ``n`` thumbnails of the grid have loaded."""
    images = page.locator("li.tile img")
    for i in range(min(n, images.count())):
        images.nth(i).scroll_into_view_if_needed()
        expect(images.nth(i)).to_have_js_property("complete", True)
    page.evaluate("window.scrollTo(0, 0)")


def test_review_in_a_real_browser(served: tuple[Dataset, str, subprocess.Popen], tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    ds, url, proc = served
    base = url.split("?", 1)[0]
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1100, "height": 700})
        page.set_default_timeout(DEADLINE_MS)
        expect.set_options(timeout=DEADLINE_MS)
        problems: list[str] = []
        page.on("pageerror", lambda e: problems.append(str(e)))
        page.on("console", lambda m: problems.append(m.text)
                if m.type == "error" and not m.text.startswith("Failed to load resource") else None)
        failed: list[str] = []  # answers >= 400 other than the refusals and the busy root this test asks for
        page.on("response", lambda r: failed.append(f"{r.status} {r.url}")
                if r.status >= 400 and r.status != 409 and not r.url.endswith("/favicon.ico") else None)
        try:
            # refused without the token, let in with it (and the token leaves the address bar)
            refused = page.goto(base)
            assert refused.status == 403 and "token" in page.content()
            failed.clear()  # the refusal itself
            page.goto(url)
            assert "token=" not in page.url
            tiles = page.locator("li.tile")
            n_images = manifest_rows(ds.root, "SELECT count(*) FROM images")[0][0]
            assert page.locator("#total").text_content() == str(n_images)
            # the docs' screenshot shows only the synthetic renderings (the real photos may not be redistributed)
            page.goto(base + "?" + urlencode([("job", j) for j in synthetic_jobs]))
            thumbnails_shown(page, 12)
            tiles.nth(1).click()
            tiles.nth(3).click(modifiers=["Shift"])
            assert page.locator("li.tile.selected").count() == 3
            small_png(SHOTS / "grid.png", page.screenshot())
            page.goto(base)

            # filter by a facet, then by a second one (combined in the URL)
            page.click('a.fv[data-facet="label"][data-value="selfie"]')
            page.wait_for_url("**label=selfie**")
            labels = {li.get_attribute("data-label") for li in tiles.all()}
            assert labels == {"selfie"}
            page.click('a.fv[data-facet="decision"][data-value="accepted"]')
            page.wait_for_url("**decision=accepted**")
            accepted_selfies = manifest_rows(
                ds.root, "SELECT count(*) FROM images WHERE label='selfie' AND decision='accepted'")[0][0]
            assert tiles.count() == accepted_selfies >= 4

            # sort by likely mislabels: without a model the page says how to get one
            page.click('a.sort[data-sort="mislabeled"]')
            page.wait_for_url("**sort=mislabeled**")
            assert "selfiescope train" in page.locator("#model-note").text_content()
            # with a model's out-of-fold probabilities, the image it contradicts most comes first
            shown = [li.get_attribute("data-id") for li in tiles.all()]
            doubted = shown[-1]
            write_model(tmp_path / "model", ds.root, {h: ("selfie", 0.02 if h == doubted else 0.9) for h in shown})
            page.reload()
            expect(page.locator("#model-note")).to_have_count(0)
            assert tiles.nth(0).get_attribute("data-id") == doubted
            assert tiles.nth(0).locator(".p").text_content() == "p=0.02"
            page.click('a.fv[data-facet="disagrees"][data-value="yes"]')
            page.wait_for_url("**disagrees=yes**")
            assert [li.get_attribute("data-id") for li in tiles.all()] == [doubted]
            page.click('a.fv[data-facet="disagrees"][data-value="yes"]')  # off again
            page.wait_for_url(lambda u: "disagrees" not in u)

            key_of = {label: str(i + 1) for i, label in enumerate(page.evaluate("JSON.parse(document.body.dataset.labels)"))}

            def saved() -> str:
                page.wait_for_selector("#status[data-kind=saved]")
                text = page.locator("#status").text_content()
                page.evaluate("document.getElementById('status').dataset.kind = ''")
                return text

            # relabel one by keyboard: the first tile has the focus
            first = tiles.nth(0).get_attribute("data-id")
            page.keyboard.press(key_of["portrait"])
            assert saved().startswith("saved")
            assert effective_label(ds.root, first) == "portrait"
            assert [r[1:4] for r in review_rows(ds.root) if r[1] == "relabel"] == [("relabel", "selfie", "portrait")]
            assert tiles.nth(0).get_attribute("data-label") == "portrait"
            # the stored file stays where it was stored: a relabel is a manifest change only
            stored_at = manifest_rows(ds.root, "SELECT location FROM images WHERE content_hash=?", (first,))[0][0]
            assert (ds.root / stored_at).is_file() and stored_at.startswith("selfie/")

            # relabel many: j moves, x selects
            for key in ("j", "x", "j", "x", "j", "x"):
                page.keyboard.press(key)
            many = [tiles.nth(i).get_attribute("data-id") for i in (1, 2, 3)]
            assert page.locator("li.tile.selected").count() == 3
            page.keyboard.press(key_of["portrait"])
            saved()
            assert all(effective_label(ds.root, i) == "portrait" for i in many)
            batch = {r[5] for r in review_rows(ds.root) if r[0] in many and r[1] == "relabel"}
            assert len(batch) == 1  # one action, one batch

            # shift + a move extends the selection; Escape clears it
            page.keyboard.press("Escape")
            page.keyboard.press("Shift+ArrowRight")
            assert page.locator("li.tile.selected").count() == 2
            page.keyboard.press("Escape")
            assert page.locator("li.tile.selected").count() == 0

            # undo the last action: the three go back, the first stays
            page.keyboard.press("u")
            saved()
            assert all(effective_label(ds.root, i) == "selfie" for i in many)
            assert effective_label(ds.root, first) == "portrait"

            # exclude with a note (the page asks for it)
            page.once("dialog", lambda d: d.accept("a mirror shot, not a selfie"))
            page.keyboard.press("Escape")
            target = tiles.nth(1).get_attribute("data-id")
            tiles.nth(1).click()
            page.keyboard.press("e")
            saved()
            assert manifest_rows(ds.root, "SELECT excluded FROM images WHERE content_hash=?", (target,)) == [(1,)]
            assert ("exclude", "a mirror shot, not a selfie") in [(r[1], r[4]) for r in review_rows(ds.root) if r[0] == target]
            assert "excluded" in tiles.nth(1).get_attribute("class")

            # forget: the confirmation says what will go; declining keeps everything
            gone = tiles.nth(2).get_attribute("data-id")
            location = manifest_rows(ds.root, "SELECT location FROM images WHERE content_hash=?", (gone,))[0][0]
            asked: list[str] = []
            page.once("dialog", lambda d: (asked.append(d.message), d.dismiss()))
            tiles.nth(2).click()
            page.keyboard.press("f")
            expect(page.locator("#status")).to_have_text("nothing forgotten")
            assert asked and "Forget 1 image" in asked[0] and (ds.root / location).is_file()
            print("the forget confirmation:", asked[0])
            page.once("dialog", lambda d: d.accept())
            page.keyboard.press("f")
            saved()
            assert not (ds.root / location).exists()
            assert manifest_rows(ds.root, "SELECT count(*) FROM images WHERE content_hash=? AND decision='accepted'",
                                 (gone,)) == [(0,)]
            assert page.locator(f'li.tile[data-id="{gone}"]').count() == 0

            # another run holds the root: the edit is refused with its pid, never shown as saved
            holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(ds.root)], stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
            try:
                assert read_line(holder.stdout, 60).strip() == "held"
                before = review_rows(ds.root)
                page.keyboard.press("r")
                page.wait_for_selector("#status[data-kind=busy]")
                assert f"is in use by pid {holder.pid}" in page.locator("#status").text_content()
                page.wait_for_selector("#busy:not([hidden])")
                assert review_rows(ds.root) == before
            finally:
                holder.communicate("\n", timeout=60)

            # a concurrent import: the open page learns of the new images
            page.goto(base + "?sort=newest")
            more = tmp_path / "more"
            more.mkdir()
            for src in sorted((FACES / "portrait").glob("caltech_*.jpg"))[30:33]:
                shutil.copy(src, more / src.name)
            rows_before = manifest_rows(ds.root, "SELECT count(*) FROM images")[0][0]
            imported = subprocess.run([sys.executable, "-m", "selfiescope", "import", str(more), "--label", "portrait",
                                       "--settings", str(ds.settings_file)], capture_output=True, text=True, timeout=300,
                                      env={**os.environ, "PYTHONPATH": str(REPO)})
            assert imported.returncode == 0, imported.stderr
            added = manifest_rows(ds.root, "SELECT count(*) FROM images")[0][0] - rows_before
            assert added > 0
            page.wait_for_selector("#news:not([hidden])")  # the count grows as the import's images arrive
            expect(page.locator("#news-text")).to_have_text(f"{added} new image{'s' if added > 1 else ''}")
            page.click("#news-reload")
            now = manifest_rows(ds.root, "SELECT count(*) FROM images")[0][0]
            expect(page.locator("#total")).to_have_text(str(now))

            # the detail view: faces boxed, the largest marked (a synthetic rendering, for the docs)
            page.goto(base + "?" + urlencode([("decision", "accepted"), ("job", synthetic_jobs[0])]))
            page.keyboard.press("Enter")
            page.wait_for_url("**/i/**")
            page.wait_for_selector("svg.boxes rect.face.largest")
            expect(page.locator("#photo")).to_have_js_property("complete", True)
            small_png(SHOTS / "detail.png", page.screenshot())
            assert not problems, problems
            assert not failed, failed
        finally:
            browser.close()
    proc.send_signal(signal.SIGINT)
    assert proc.wait(60) == 0
    assert "Traceback" not in proc.stderr.read()
