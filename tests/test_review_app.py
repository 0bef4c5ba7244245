"""The review app's routes and gate, through Starlette's TestClient, on a real imported dataset
read by the real data layer: the launch token, the Host check, CSRF, the CSP, ids never paths,
JSON actions that return the saved state, a busy root, and no owner name on any page."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from typing import Any
from pathlib import Path
from urllib.parse import quote

import pytest
from conftest import FACES
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st
from review_helpers import CAPTION, OWNERS, Dataset, build_dataset, manifest_rows, review_settings

pytest.importorskip("starlette")
from starlette.testclient import TestClient  # noqa: E402

from selfiescope.core.app import App  # noqa: E402
from selfiescope.review.app import create_app  # noqa: E402
from selfiescope.review.data import ReviewData  # noqa: E402
from selfiescope.review.security import Gate  # noqa: E402

pytestmark = pytest.mark.faces
HOST = "127.0.0.1:8765"


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Dataset:
    if not FACES.is_dir():
        pytest.skip(f"real face photos not available: {FACES}")
    return build_dataset(tmp_path_factory.mktemp("review"), FACES, owners=True)


@pytest.fixture
def own_dataset(dataset: Dataset, tmp_path: Path) -> Dataset:
    """A copy of the module's dataset that a test may change."""
    root = tmp_path / "data"
    shutil.copytree(dataset.root, root)
    return Dataset(review_settings(root), root, dataset.settings_file, dataset.folders)


def client_for(ds: Dataset, logged_in: bool = True) -> tuple[TestClient, Gate, ReviewData]:
    gate = Gate.for_address("127.0.0.1", 8765)
    data = ReviewData(App.create(ds.settings))
    client = TestClient(create_app(data, gate), base_url=f"http://{HOST}")
    if logged_in:
        first = client.get(f"/?token={gate.token}", follow_redirects=False)
        assert first.status_code == 303
    return client, gate, data


def served(ds: Dataset) -> Iterator[tuple[TestClient, Gate, ReviewData]]:
    """A logged-in client of the app over ``ds``, running for as long as the caller holds it."""
    client, gate, data = client_for(ds)
    with client:
        yield client, gate, data
    data.close()


@pytest.fixture
def app(dataset: Dataset) -> Iterator[tuple[TestClient, Gate, ReviewData]]:
    yield from served(dataset)


@pytest.fixture
def own_app(own_dataset: Dataset) -> Iterator[tuple[TestClient, Gate, ReviewData]]:
    yield from served(own_dataset)


def ids_of(client: TestClient, query: str = "") -> list[str]:
    page = client.get(f"/api/page?limit=1000&{query}").json()
    return [t["id"] for t in page["tiles"]]


def post(client: TestClient, gate: Gate, path: str, body: dict) -> object:
    return client.post(path, json=body, headers={"x-csrf-token": gate.csrf})


# --- the gate -------------------------------------------------------------------------------
PATHS = ["/", "/api/page", "/api/facets", "/api/version", "/static/review.js", "/thumb/" + "a" * 64,
         "/image/" + "a" * 64, "/i/" + "a" * 64, "/api/detail/" + "a" * 64]


@pytest.mark.parametrize("path", PATHS)
def test_nothing_is_served_without_the_launch_token(dataset: Dataset, path: str) -> None:
    client, gate, data = client_for(dataset, logged_in=False)
    try:
        refused = client.get(path)
        assert refused.status_code == 403 and "selfiescope review" in refused.text
        wrong = client.get(path + "?token=" + "x" * len(gate.token), follow_redirects=False)
        assert wrong.status_code == 403 and "set-cookie" not in wrong.headers
        client.cookies.set(gate.cookie, "not-the-token")
        assert client.get(path).status_code == 403
    finally:
        data.close()


def test_the_token_becomes_a_strict_httponly_cookie_and_leaves_the_address(dataset: Dataset) -> None:
    client, gate, data = client_for(dataset, logged_in=False)
    try:
        first = client.get(f"/?label=selfie&token={gate.token}&sort=newest", follow_redirects=False)
        assert first.status_code == 303
        assert first.headers["location"] == "/?label=selfie&sort=newest"
        cookie = first.headers["set-cookie"]
        assert f"{gate.cookie}={gate.token}" in cookie and "HttpOnly" in cookie and "SameSite=strict" in cookie
        page = client.get(first.headers["location"])
        assert page.status_code == 200 and gate.token not in page.text
    finally:
        data.close()


@pytest.mark.parametrize("host", ["evil.example:8765", "127.0.0.1:9999", "localhost.evil.example:8765", ""])
def test_a_foreign_host_header_is_refused_even_with_the_cookie(app: tuple, host: str) -> None:
    client, gate, _ = app
    assert client.get("/", headers={"host": host}).status_code == 421
    assert client.get(f"/?token={gate.token}", headers={"host": host}, follow_redirects=False).status_code == 421


def test_localhost_reaches_an_app_bound_to_127_0_0_1(dataset: Dataset) -> None:
    client, gate, data = client_for(dataset)
    try:
        assert client.get("/api/version", headers={"host": "localhost:8765"}).status_code == 200
    finally:
        data.close()


def test_a_change_needs_the_csrf_header_and_a_json_body(own_app: tuple, own_dataset: Dataset) -> None:
    client, gate, _ = own_app
    image = ids_of(client)[0]
    body = {"action": "reviewed", "ids": [image]}
    assert client.post("/api/action", json=body).status_code == 403
    assert client.post("/api/action", json=body, headers={"x-csrf-token": "guess"}).status_code == 403
    form = client.post("/api/action", content="action=reviewed", headers={
        "x-csrf-token": gate.csrf, "content-type": "application/x-www-form-urlencoded"})
    assert form.status_code == 415
    assert client.post(f"/api/undo?token={gate.token}", json={}, headers={"x-csrf-token": gate.csrf}).status_code == 400
    assert manifest_rows(own_dataset.root, "SELECT count(*) FROM reviews") == [(0,)]


def test_every_answer_carries_a_strict_csp_and_pages_have_no_inline_script(app: tuple) -> None:
    client, gate, _ = app
    image = ids_of(client)[0]
    for path in ["/", f"/i/{image}", "/api/page", f"/thumb/{image}", "/static/review.js", "/nope"]:
        answer = client.get(path)
        csp = answer.headers["content-security-policy"]
        assert "default-src 'self'" in csp and "script-src 'self'" in csp and "'unsafe-inline'" not in csp
        assert answer.headers["referrer-policy"] == "no-referrer"
        assert answer.headers["x-content-type-options"] == "nosniff"
        assert answer.headers["cache-control"] == "no-store"  # a forgotten image lives on in no browser cache
    for path in ["/", f"/i/{image}"]:
        html = client.get(path).text
        assert not re.search(r"<script(?![^>]*\bsrc=)", html)  # every script is a file
        assert not re.search(r"\son[a-z]+\s*=", html)  # no inline handlers
        assert not re.search(r"\sstyle\s*=", html)
        assert not re.search(r"(src|href)=\"(https?:)?//", html.replace('href="https://example.test', ""))


# --- ids, never paths -----------------------------------------------------------------------
TRAVERSALS = ["../../../../etc/passwd", "..%2f..%2f..%2fetc%2fpasswd", "%2e%2e/%2e%2e/etc/passwd", "/etc/passwd",
              "....//....//etc/passwd", "manifest.sqlite", "A" * 64, "g" * 64, "a" * 65, "a" * 7, "%00" + "a" * 64]


@pytest.mark.parametrize("route", ["/thumb/", "/image/", "/i/", "/api/detail/"])
@pytest.mark.parametrize("name", TRAVERSALS)
def test_images_are_reached_by_hex_id_only(app: tuple, dataset: Dataset, route: str, name: str) -> None:
    client, _, _ = app
    answer = client.get(route + name)
    assert answer.status_code == 404
    assert b"root:" not in answer.content and b"SQLite format" not in answer.content


def test_static_files_stay_in_their_folder(app: tuple) -> None:
    client, _, _ = app
    for path in ["/static/../app.py", "/static/..%2fapp.py", "/static/%2e%2e/security.py", "/static/../../cli/review.py"]:
        answer = client.get(path)
        assert answer.status_code == 404 and b"import" not in answer.content


@hsettings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(min_size=1, max_size=80).filter(lambda s: not re.fullmatch(r"[0-9a-f]{8,64}", s)))
def test_no_name_but_a_hex_id_reaches_any_bytes(app: tuple, name: str) -> None:
    client, _, _ = app
    for route in ("/thumb/", "/image/"):
        answer = client.get(route + quote(name, safe=""))
        assert answer.status_code in (404, 400), (route, name)


# --- reads ----------------------------------------------------------------------------------
def test_the_grid_shows_the_dataset_and_facets_narrow_it(app: tuple, dataset: Dataset) -> None:
    client, _, _ = app
    everything = client.get("/api/page?limit=1000").json()
    n_images = manifest_rows(dataset.root, "SELECT count(*) FROM images")[0][0]
    assert everything["total"] == n_images and len(everything["tiles"]) == n_images
    html = client.get("/").text
    assert all(f'data-id="{t["id"]}"' in html for t in everything["tiles"][:20])
    facets = {f["name"]: f for f in client.get("/api/facets").json()}
    selfies = next(v for v in facets["label"]["values"] if v["value"] == "selfie")
    narrowed = client.get("/api/page?limit=1000&label=selfie").json()
    assert narrowed["total"] == selfies["count"] == len([t for t in everything["tiles"] if t["label"] == "selfie"])
    page = client.get("/?label=selfie")
    assert 'class="fv on" data-facet="label" data-value="selfie"' in page.text
    assert client.get("/?label=selfie&label=portrait").status_code == 200


def test_paging_by_cursor_visits_every_image_once(app: tuple) -> None:
    client, _, _ = app
    seen, cursor = [], None
    while True:
        page = client.get("/api/page?limit=3" + (f"&cursor={quote(cursor)}" if cursor else "")).json()
        seen += [t["id"] for t in page["tiles"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert len(seen) == len(set(seen)) == page["total"]


@pytest.mark.parametrize("query", ["sort=oldest", "label=%00", "reviewed=maybe", "face_area=2:3", "nosuch=1",
                                   "cursor=%ff%fe", "limit=many"])
def test_a_bad_query_is_one_line_naming_the_key(app: tuple, query: str) -> None:
    client, _, _ = app
    for path in ("/api/page", "/"):
        answer = client.get(f"{path}?{query}")
        if answer.status_code == 200:  # a value that matches nothing is a valid empty filter; the page starts at the top
            assert query.startswith("label=") or (path == "/" and query.split("=")[0] in ("cursor", "limit"))
            continue
        assert answer.status_code == 400, answer.text
        text = answer.json()["error"] if path.startswith("/api") else answer.text
        assert "\n" not in text.strip() and "Traceback" not in text


def test_the_detail_view_boxes_the_faces_and_shows_the_group(app: tuple, dataset: Dataset) -> None:
    client, _, data = app
    grouped = client.get("/api/page?limit=1000&in_group=yes").json()["tiles"]
    assert grouped, "the mirrored copy makes a near-duplicate group"
    detail = client.get(f"/api/detail/{grouped[0]['id']}").json()
    html = client.get(f"/i/{grouped[0]['id']}").text
    assert detail["group"] and detail["kept_id"]
    assert f'/i/{detail["kept_id"]}' in html or detail["kept_id"] == grouped[0]["id"]
    accepted = client.get("/api/page?limit=1000&decision=accepted").json()["tiles"]
    with_face = next(t for t in accepted if client.get(f"/api/detail/{t['id']}").json()["faces"])
    page = client.get(f"/i/{with_face['id']}").text
    assert 'class="face largest"' in page and "<svg" in page
    photo = client.get(f"/image/{with_face['id']}")
    thumb = client.get(f"/thumb/{with_face['id']}")
    assert photo.status_code == 200 and photo.headers["content-type"] == "image/jpeg"
    assert thumb.status_code == 200 and thumb.content[:3] == b"\xff\xd8\xff" and len(thumb.content) < len(photo.content)


def test_without_a_model_the_mislabel_sort_says_how_to_get_one(app: tuple) -> None:
    client, _, _ = app
    page = client.get("/?sort=mislabeled").text
    assert 'id="model-note"' in page and "selfiescope train" in page


# --- writes ---------------------------------------------------------------------------------
def test_a_relabel_answers_with_the_saved_state_and_writes_its_reviews_rows(own_app: tuple, own_dataset: Dataset) -> None:
    client, gate, _ = own_app
    selfies = ids_of(client, "label=selfie&decision=accepted")[:2]
    saved = post(client, gate, "/api/action", {"action": "relabel", "ids": selfies, "value": "portrait"})
    assert saved.status_code == 200, saved.text
    body = saved.json()
    assert body["changed"] == 2 and {t["id"]: t["label"] for t in body["tiles"]} == dict.fromkeys(selfies, "portrait")
    rows = manifest_rows(own_dataset.root, "SELECT content_hash, action, old, new FROM reviews WHERE action='relabel'")
    assert sorted(rows) == sorted((i, "relabel", "selfie", "portrait") for i in selfies)
    assert set(ids_of(client, "label=portrait")) >= set(selfies)
    undone = post(client, gate, "/api/undo", {})
    assert undone.status_code == 200 and undone.json()["changed"] == 2
    assert set(ids_of(client, "label=selfie")) >= set(selfies)
    labels = manifest_rows(own_dataset.root, "SELECT review_label FROM images WHERE content_hash IN (?, ?)", tuple(selfies))
    assert all(label in (None, "selfie") for (label,) in labels)


def test_exclude_keeps_its_note_and_forget_says_what_will_go(own_app: tuple, own_dataset: Dataset) -> None:
    client, gate, _ = own_app
    first, second = ids_of(client, "decision=accepted")[:2]
    saved = post(client, gate, "/api/action", {"action": "exclude", "ids": [first], "note": "a meme, not a photo"})
    assert saved.status_code == 200 and saved.json()["tiles"][0]["excluded"] is True
    assert manifest_rows(own_dataset.root, "SELECT note FROM reviews WHERE content_hash=?", (first,)) == [("a meme, not a photo",)]
    plan = post(client, gate, "/api/forget-plan", {"ids": [second]})
    assert plan.status_code == 200 and "1" in plan.json()["plan"]
    location = manifest_rows(own_dataset.root, "SELECT location FROM images WHERE content_hash=?", (second,))[0][0]
    assert (own_dataset.root / location).is_file()
    gone = post(client, gate, "/api/forget", {"ids": [second]})
    assert gone.status_code == 200, gone.text
    assert not (own_dataset.root / location).exists()
    assert second not in ids_of(client)
    assert client.get(f"/thumb/{second}").status_code == 404


@pytest.mark.parametrize("body", [{"action": "delete", "ids": ["a" * 64]}, {"action": "relabel", "ids": ["a" * 64]},
                                  {"action": "reviewed", "ids": []}, {"action": "reviewed", "ids": "abc"},
                                  {"action": "reviewed", "ids": ["../x"]}, {"action": "relabel", "ids": ["a" * 64],
                                                                            "value": "not-a-label"}, []])
def test_a_bad_action_is_refused_with_one_line_and_changes_nothing(own_app: tuple, own_dataset: Dataset, body: object) -> None:
    client, gate, _ = own_app
    answer = client.post("/api/action", json=body, headers={"x-csrf-token": gate.csrf})
    assert answer.status_code in (400, 404), answer.text
    assert "\n" not in answer.json()["error"]
    assert manifest_rows(own_dataset.root, "SELECT count(*) FROM reviews") == [(0,)]


HOLD_LOCK = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from selfiescope.core.lock import RootLock
    lock = RootLock(Path(sys.argv[1]))
    lock.acquire()
    print("held", flush=True)
    sys.stdin.readline()
""")


def test_while_another_run_holds_the_root_a_change_is_refused_naming_it(own_app: tuple, own_dataset: Dataset) -> None:
    client, gate, _ = own_app
    image = ids_of(client)[0]
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(own_dataset.root)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        answer = post(client, gate, "/api/action", {"action": "reviewed", "ids": [image]})
        assert answer.status_code == 409
        assert answer.json()["busy"] is True and f"is in use by pid {holder.pid}" in answer.json()["error"]
        polled = client.get("/api/version").json()
        assert f"pid {holder.pid}" in polled["busy"]
        # The bar says what happens to an edit meanwhile: it is refused, not queued.
        assert polled["busy_note"] == f"{polled['busy']}: changes are refused until it ends; retry then"
        assert manifest_rows(own_dataset.root, "SELECT count(*) FROM reviews") == [(0,)]
    finally:
        holder.communicate("\n", timeout=60)
    polled = client.get("/api/version").json()  # the next poll after the run let go: the bar clears
    assert polled["busy"] is None and polled["busy_note"] is None
    assert post(client, gate, "/api/action", {"action": "reviewed", "ids": [image]}).status_code == 200
    assert client.get("/api/version").json()["busy"] is None


def test_the_page_shows_the_servers_busy_note_and_says_nothing_waits() -> None:
    """The bar's words come from the server (one place says what a locked root means)."""
    from importlib.resources import files

    script = files("selfiescope.review").joinpath("static/review.js").read_text()
    assert "busy_note" in script and "wait until" not in script


def test_this_apps_own_write_is_not_another_run(own_app: tuple, own_dataset: Dataset) -> None:
    from selfiescope.core.lock import RootLock

    client, _, data = own_app
    with RootLock(own_dataset.root):
        assert data.busy() is None
        assert client.get("/api/version").json()["busy"] is None


# --- privacy --------------------------------------------------------------------------------
def test_no_page_or_json_shows_an_owner_name_or_an_uncaptured_caption(app: tuple, dataset: Dataset) -> None:
    client, _, _ = app
    stored_owners = {o for (o,) in manifest_rows(dataset.root, "SELECT owner FROM images WHERE owner IS NOT NULL")}
    assert stored_owners and not stored_owners & set(OWNERS)  # the dataset has (pseudonymised) owners
    ids = ids_of(client)
    facets = client.get("/api/facets").json()
    facet_queries = [f"{f['name']}={quote(v['value'])}" for f in facets for v in f["values"]]
    pages = ["/", "/api/page?limit=1000", "/api/facets", "/api/version", *(f"/?{q}" for q in facet_queries),
             *(f"/api/page?{q}" for q in facet_queries), *(f"/?sort={s}" for s in ("mislabeled", "face_area", "newest"))]
    pages += [p for i in ids for p in (f"/i/{i}", f"/api/detail/{i}")]
    crawled = []
    for path in pages:
        answer = client.get(path)
        assert answer.status_code == 200, path
        crawled.append(answer.text)
    text = "\n".join(crawled)
    assert any(o in text for o in stored_owners)  # the pseudonyms do show
    for name in OWNERS:
        assert name not in text and name.split(".")[0] not in text
    assert CAPTION not in text
    assert "GPS" not in text.upper().replace("GPSINFO", "")


def test_a_body_nested_too_deep_or_too_large_is_one_line(own_app: tuple, own_dataset: Dataset) -> None:
    client, gate, _ = own_app
    headers = {"x-csrf-token": gate.csrf, "content-type": "application/json"}
    deep = client.post("/api/action", content=b"[" * 100_000 + b"]" * 100_000, headers=headers)
    assert deep.status_code == 400 and "JSON" in deep.json()["error"]
    large = client.post("/api/action", content=b" " * 3_000_000, headers=headers)
    assert large.status_code == 413
    assert manifest_rows(own_dataset.root, "SELECT count(*) FROM reviews") == [(0,)]


def test_an_original_with_gps_is_shown_without_it(tmp_path: Path) -> None:
    """A rejected import is shown from its original file, which still has its GPS and text tags:
    the app serves it without them, the pixels unchanged."""
    import io

    from PIL import Image

    from selfiescope.core.metadata import has_location
    from review_helpers import import_folder

    exif = Image.Exif()
    exif[0x8825] = {1: "N", 2: (48.0, 51.0, 24.0), 3: "E", 4: (2.0, 21.0, 3.0)}
    exif[0x010E] = "at home, 12 rue des Lilas"
    folder = tmp_path / "photos"
    folder.mkdir()
    buf = io.BytesIO()
    Image.new("RGB", (320, 240), (90, 20, 40)).save(buf, "JPEG", exif=exif.tobytes())
    original = buf.getvalue()
    (folder / "no-face.jpg").write_bytes(original)
    ds = Dataset(review_settings(tmp_path / "data"), tmp_path / "data", tmp_path / "s.toml", {})
    import_folder(ds.settings, folder, "selfie")  # rejected: no face; its original stays where it is
    client, _, data = client_for(ds)
    try:
        [tile] = client.get("/api/page").json()["tiles"]
        assert tile["decision"] == "rejected" and has_location(original)
        shown = client.get(f"/image/{tile['id']}")
        assert shown.status_code == 200
        assert not has_location(shown.content) and b"rue des Lilas" not in shown.content
        assert Image.open(io.BytesIO(shown.content)).tobytes() == Image.open(io.BytesIO(original)).tobytes()
        assert b"rue des Lilas" not in client.get(f"/thumb/{tile['id']}").content
    finally:
        data.close()


@pytest.mark.parametrize("bound, reached, allowed", [
    ("127.0.0.1", "localhost:8765", True), ("localhost", "127.0.0.1:8765", True), ("::1", "[::1]:8765", True),
    ("127.0.0.1", "127.0.0.1:8766", False), ("127.0.0.1", "evil.example:8765", False),
    ("0.0.0.0", "127.0.0.1:8765", True), ("0.0.0.0", "evil.example:8765", False),
])
def test_the_host_check_knows_the_names_of_the_bound_address(bound: str, reached: str, allowed: bool) -> None:
    assert (reached in Gate.for_address(bound, 8765).allowed_hosts) is allowed


def test_an_app_on_every_interface_is_reached_by_this_machines_addresses() -> None:
    import psutil

    names = Gate.for_address("0.0.0.0", 8765).allowed_hosts
    ipv4 = [a.address for addrs in psutil.net_if_addrs().values() for a in addrs if a.family == 2]
    assert ipv4 and all(f"{ip}:8765" in names for ip in ipv4)


def test_two_apps_on_one_machine_keep_their_own_cookies(dataset: Dataset) -> None:
    """Browsers keep cookies per host, not per port: a second launch must not log the first out."""
    first, second = Gate.for_address("127.0.0.1", 8765), Gate.for_address("127.0.0.1", 8766)
    assert first.cookie != second.cookie
    client, gate, data = client_for(dataset)
    try:
        client.cookies.set(second.cookie, second.token)  # the other app's visit, same browser
        assert client.get("/api/version").status_code == 200
    finally:
        data.close()


def test_a_post_link_is_a_link_only_when_it_is_http(own_dataset: Dataset) -> None:
    """A source plugin's post URL is shown, and linked only when it is http(s): never a
    ``javascript:`` link on the page."""
    image = manifest_rows(own_dataset.root, "SELECT content_hash FROM images WHERE decision='accepted' LIMIT 1")[0][0]
    from selfiescope.core.manifest import Manifest

    m = Manifest.at_root(own_dataset.root)
    m.execute("UPDATE images SET post_url=? WHERE content_hash=?", ("javascript:alert(document.cookie)", image))
    m.close()
    client, _, data = client_for(own_dataset)
    try:
        html = client.get(f"/i/{image}").text
        assert 'href="javascript:' not in html and "javascript:alert(document.cookie)" in html
    finally:
        data.close()


def test_text_from_the_dataset_is_never_markup(own_dataset: Dataset) -> None:
    """Reasons, jobs and labels come from plugins and folder names: every page escapes them."""
    from selfiescope.core.manifest import Manifest

    evil = '"><script>alert(1)</script><img src=x onerror=alert(2)>'
    m = Manifest.at_root(own_dataset.root)
    m.execute("UPDATE images SET reason=?, job=? WHERE decision='rejected'", (evil, evil))
    m.execute("UPDATE rejections SET reason=?, job=?", (evil, evil))
    m.close()
    client, _, data = client_for(own_dataset)
    try:
        rejected = client.get("/api/page?decision=rejected&limit=1000").json()["tiles"]
        assert rejected
        for path in ["/", "/?decision=rejected", f"/i/{rejected[0]['id']}"]:
            html = client.get(path).text
            assert "<script>alert" not in html and "<img src=x" not in html
            assert "&lt;script&gt;alert(1)" in html or path == "/"
    finally:
        data.close()


def test_odd_orders_say_what_happened_and_change_nothing_else(own_app: tuple, own_dataset: Dataset) -> None:
    client, gate, _ = own_app
    nothing = post(client, gate, "/api/undo", {})
    assert nothing.status_code == 200 and nothing.json()["changed"] == 0
    image = ids_of(client, "decision=accepted")[0]
    assert post(client, gate, "/api/forget", {"ids": [image]}).json()["changed"] == 1
    after = post(client, gate, "/api/action", {"action": "reviewed", "ids": [image]})  # a page still showing it
    assert after.status_code == 200 and after.json()["changed"] == 0 and after.json()["tiles"] == []
    again = post(client, gate, "/api/forget", {"ids": [image]})
    assert again.status_code == 200 and again.json()["changed"] == 0
    assert client.get(f"/i/{image}").status_code == 404 and client.get(f"/image/{image}").status_code == 404
    assert manifest_rows(own_dataset.root, "SELECT count(*) FROM reviews WHERE content_hash=?", (image,)) == [(0,)]


def test_an_answer_says_when_it_carries_only_part_of_a_large_selection(own_app: tuple) -> None:
    from selfiescope.review.routes import SAVED_TILES

    client, gate, _ = own_app
    real = ids_of(client, "decision=accepted")
    ids = real + [f"{i:064x}" for i in range(SAVED_TILES)]  # a selection larger than one answer carries
    answer = post(client, gate, "/api/action", {"action": "reviewed", "ids": ids}).json()
    assert answer["changed"] == len(real) and answer["tiles_limited"] is True
    small = post(client, gate, "/api/action", {"action": "unreviewed", "ids": real}).json()
    assert small["tiles_limited"] is False and {t["id"] for t in small["tiles"]} == set(real)


def test_the_review_docs_show_screenshots_that_exist_and_are_small() -> None:
    from conftest import REPO

    text = (REPO / "docs" / "review.md").read_text(encoding="utf-8")
    shots = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert {"review/grid.png", "review/detail.png"} <= set(shots)
    for shot in shots:
        path = REPO / "docs" / shot
        assert path.is_file() and path.stat().st_size < 200_000, shot
    assert "docs/review.md" in (REPO / "README.md").read_text(encoding="utf-8")


def test_a_bug_below_is_one_line_on_the_page_and_in_the_log(app: tuple, monkeypatch: pytest.MonkeyPatch,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    client, _, data = app

    def broken() -> int:
        raise RuntimeError("internal detail /secret/path")

    monkeypatch.setattr(data, "version", broken)
    with caplog.at_level("INFO", logger="selfiescope.review"):
        answer = client.get("/api/version")
        page = client.get("/")
    assert answer.status_code == 500 and "secret" not in answer.text and "Traceback" not in answer.text
    assert page.status_code == 500 and "secret" not in page.text
    assert "content-security-policy" in answer.headers
    assert all(r.exc_info is None for r in caplog.records if r.levelno >= 30)
    assert any("RuntimeError" in r.getMessage() for r in caplog.records)


def test_facet_links_add_alternatives_and_swap_yes_no_and_ranges(app: tuple) -> None:
    import html as html_lib

    client, _, _ = app
    page = client.get("/?label=selfie&reviewed=no").text

    def href(facet: str, value: str) -> str:
        found = re.search(rf'<a href="([^"]*)" class="fv[^"]*" data-facet="{re.escape(facet)}" data-value="{re.escape(value)}"',
                          page)
        assert found, (facet, value)
        return html_lib.unescape(found.group(1))

    assert "label=selfie" in href("label", "portrait") and "label=portrait" in href("label", "portrait")  # any of
    assert "label=selfie" not in href("label", "selfie")  # a second click takes it off
    assert "reviewed=yes" in href("reviewed", "yes") and "reviewed=no" not in href("reviewed", "yes")  # one at a time
    facets = {f["name"]: f for f in client.get("/api/facets").json()}
    ranges = [v["value"] for v in facets["face_area"]["values"]]
    page = client.get(f"/?face_area={ranges[0]}").text
    assert f"face_area={ranges[0]}".replace(":", "%3A") not in href("face_area", ranges[1])
    assert client.get(href("face_area", ranges[1])).status_code == 200


SECRETS = (b"SECRETCOM", b"SECRETUSER", b"SECRETDESC", b"SECRETXMP", b"SECRETTEXT", b"SECRETITXT")
XMP_PACKET = b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><dc:description>SECRETXMP</dc:description></x:xmpmeta>'


def with_text_metadata(pixels: Any, fmt: str) -> bytes:
    """``pixels`` saved with every kind of text a file can carry: a JPEG comment (COM), EXIF
    UserComment and ImageDescription, XMP; PNG tEXt, iTXt and an XMP chunk."""
    import io

    from PIL import Image, PngImagePlugin

    out = io.BytesIO()
    if fmt == "JPEG":
        exif = Image.Exif()
        exif[0x9286] = b"ASCII\0\0\0SECRETUSER"
        exif[0x010E] = "SECRETDESC"
        pixels.save(out, "JPEG", comment=b"SECRETCOM", exif=exif.tobytes(), xmp=XMP_PACKET, quality=92)
    else:
        info = PngImagePlugin.PngInfo()
        info.add_text("Comment", "SECRETTEXT")
        info.add_itxt("Description", "SECRETITXT")
        info.add_itxt("XML:com.adobe.xmp", XMP_PACKET.decode())
        pixels.save(out, "PNG", pnginfo=info)
    return out.getvalue()


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_no_text_of_a_file_reaches_a_thumbnail_or_a_shown_image(tmp_path: Path, fmt: str) -> None:
    """Accepted (stored) and rejected (shown from the original) images, each with a comment, text
    chunks, EXIF text and XMP: neither /thumb, nor /image, nor the kept thumbnail carries any."""
    import io

    from PIL import Image

    from review_helpers import import_folder

    face = next(p for p in sorted((FACES / "portrait").iterdir()) if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    folder = tmp_path / "photos"
    folder.mkdir()
    with Image.open(face) as im:
        (folder / f"face.{fmt.lower()}").write_bytes(with_text_metadata(im.convert("RGB"), fmt))
    (folder / f"flat.{fmt.lower()}").write_bytes(with_text_metadata(Image.new("RGB", (320, 240), (90, 20, 40)), fmt))
    assert all(s in (folder / f"flat.{fmt.lower()}").read_bytes() for s in (b"SECRETXMP",))
    ds = Dataset(review_settings(tmp_path / "data"), tmp_path / "data", tmp_path / "s.toml", {})
    import_folder(ds.settings, folder, "portrait")
    client, _, data = client_for(ds)
    try:
        tiles = client.get("/api/page").json()["tiles"]
        assert {t["decision"] for t in tiles} == {"accepted", "rejected"}
        for tile in tiles:
            for route in ("thumb", "image"):
                got = client.get(f"/{route}/{tile['id']}")
                assert got.status_code == 200, (route, tile["decision"], got.text)
                leaked = [s for s in SECRETS if s in got.content]
                assert not leaked, (route, tile["decision"], leaked)
                with Image.open(io.BytesIO(got.content)) as shown:
                    assert not {"comment", "xmp", "XML:com.adobe.xmp", "Comment", "Description"} & set(shown.info)
            kept = (ds.root / ".thumbs" / tile["id"][:2] / f"{tile['id']}.jpg").read_bytes()
            assert not [s for s in SECRETS if s in kept]
    finally:
        data.close()


def fsspec_view(ds: Dataset) -> Dataset:
    """The same dataset read through the fsspec backend on a ``file://`` url of its root."""
    from selfiescope.core.settings import settings_from_dict

    settings = settings_from_dict({"storage": {"root": str(ds.root), "backend": "fsspec"},
                                   "plugins": {"fsspec": {"url": ds.root.as_uri()}},
                                   "engine": {"workers": 2, "threads": 2}})
    return Dataset(settings, ds.root, ds.settings_file, ds.folders)


@pytest.mark.parametrize("backend", ["files", "fsspec"])
@pytest.mark.parametrize("swap", ["symlink", "system file", "another image"])
def test_bytes_that_are_not_the_stored_ones_are_never_served(own_dataset: Dataset, backend: str, swap: str) -> None:
    """Whatever is at a stored image's place now (a link to a system file, that file's bytes
    copied over it, another image's bytes), the app serves only the bytes the manifest recorded
    for that image: anything else is a 404 saying so, and no thumbnail of it is kept."""
    pytest.importorskip("fsspec")
    ds = own_dataset if backend == "files" else fsspec_view(own_dataset)
    rows = manifest_rows(ds.root, "SELECT content_hash, location FROM images WHERE location IS NOT NULL "
                                  "ORDER BY content_hash LIMIT 2")
    (victim, location), (_, other_location) = rows
    path = ds.root / location
    secret = Path("/etc/passwd")
    if swap == "symlink":
        path.unlink()
        path.symlink_to(secret)
    elif swap == "system file":
        path.write_bytes(secret.read_bytes())
    else:
        path.write_bytes((ds.root / other_location).read_bytes())
    client, _, data = client_for(ds)
    try:
        for route in ("image", "thumb"):
            got = client.get(f"/{route}/{victim}")
            assert got.status_code == 404, (route, got.status_code)
            assert got.text == "the image's bytes are not the ones stored"
            assert secret.read_bytes()[:64] not in got.content
        assert not (ds.root / ".thumbs" / victim[:2] / f"{victim}.jpg").exists()
        untouched = manifest_rows(ds.root, "SELECT content_hash FROM images WHERE location=?", (other_location,))
        assert client.get(f"/image/{untouched[0][0]}").status_code == 200
    finally:
        data.close()


def test_a_thumbnail_kept_with_its_originals_text_is_served_without_it(own_app: tuple, own_dataset: Dataset) -> None:
    """A thumbnail already under .thumbs/ that still carries a comment and XMP (kept before
    thumbnails were made of pixels alone) is served without them."""
    import io

    from PIL import Image

    client, _, _ = own_app
    image = ids_of(client)[0]
    kept = own_dataset.root / ".thumbs" / image[:2] / f"{image}.jpg"
    kept.parent.mkdir(parents=True, exist_ok=True)
    out = io.BytesIO()
    Image.new("RGB", (80, 60), (1, 2, 3)).save(out, "JPEG", comment=b"SECRETCOM", xmp=XMP_PACKET)
    kept.write_bytes(out.getvalue())
    got = client.get(f"/thumb/{image}")
    assert got.status_code == 200 and not [s for s in SECRETS if s in got.content]
    assert Image.open(io.BytesIO(got.content)).size == (80, 60)


def _two_face_app_dataset(tmp_path: Path) -> tuple[Dataset, dict[str, str]]:
    """A kept and a rejected photo of two people each, imported through the whole chain."""
    from face_pairs import two_faces_kept, two_faces_too_small
    from review_helpers import import_folder, write_settings_file

    folder, root = tmp_path / "in", tmp_path / "data"
    folder.mkdir()
    two_faces_kept(FACES, folder / "pair.jpg")
    two_faces_too_small(FACES, folder / "pair_small.jpg")
    settings = review_settings(root)
    import_folder(settings, folder, "selfie")
    ids = {Path(path).name: h for h, path in manifest_rows(root, "SELECT content_hash, origin_path FROM images")}
    return Dataset(settings, root, write_settings_file(root), {"selfie": folder}), ids


def _rects(page: str) -> list[str]:
    svg = re.search(r'<svg class="boxes".*?</svg>', page, re.S)
    return re.findall(r"<rect [^>]*>", svg.group(0)) if svg else []


def test_the_detail_view_boxes_every_face_and_marks_the_largest(tmp_path: Path) -> None:
    if not FACES.is_dir():
        pytest.skip(f"real face photos not available: {FACES}")
    ds, ids = _two_face_app_dataset(tmp_path)
    client, _, data = client_for(ds)
    with client:
        for name in ("pair.jpg", "pair_small.jpg"):  # kept, and rejected as face_too_small
            detail = client.get(f"/api/detail/{ids[name]}").json()
            assert len(detail["faces"]) == 2 and detail["faces_unboxed"] == 0, name
            largest = detail["faces"][detail["largest"]]
            assert largest[2] * largest[3] == max(w * h for _, _, w, h in detail["faces"])
            page = client.get(f"/i/{ids[name]}").text
            rects = _rects(page)
            assert len(rects) == 2 and sum('class="face largest"' in r for r in rects) == 1, name
            marked = next(r for r in rects if "largest" in r)
            assert f'x="{largest[0]}" y="{largest[1]}" width="{largest[2]}" height="{largest[3]}"' in marked
            assert "2 face(s) detected, 2 boxed, the largest marked</figcaption>" in page
    data.close()


def test_an_old_manifest_shows_its_one_box_and_says_so(tmp_path: Path) -> None:
    import sqlite3

    if not FACES.is_dir():
        pytest.skip(f"real face photos not available: {FACES}")
    ds, ids = _two_face_app_dataset(tmp_path)
    db = sqlite3.connect(ds.root / "manifest.sqlite")
    db.execute("ALTER TABLE images DROP COLUMN face_boxes")  # as written before the column
    db.commit()
    db.close()
    client, _, data = client_for(ds)
    with client:
        page = client.get(f"/i/{ids['pair.jpg']}").text
        rects = _rects(page)
        assert len(rects) == 1 and 'class="face largest"' in rects[0]
        assert ("2 face(s) detected, 1 boxed, the largest marked; the manifest keeps no box for the other 1"
                in page)
        assert client.get(f"/api/detail/{ids['pair.jpg']}").json()["faces_unboxed"] == 1
    data.close()
