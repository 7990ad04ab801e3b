"""The rendered book as a reader meets it, in a real browser (Debian's Chromium driven by Selenium).

``make test`` builds the book (``_build/html``) and then runs this file. Every page in the table of
contents is served on localhost and opened; a page fails on a broken image, an image without alt
text, a broken internal link or anchor, an error output, a figure missing from a chapter, a launch
button pointing at the wrong notebook, or a JavaScript error of its own. The epsilon and sigma
sliders are dragged and the picture must change. Screenshots are kept under ``_build/screenshots``.

The browser has no network but the book's own server: formulas must be typeset by the MathJax the book
serves itself. Exercise solutions must be folded until the reader opens them, and the API reference must
show its signatures.

Without a Chromium and its driver the file skips; without a built book it skips too, unless
``ADVLIB_REQUIRE_BOOK=1`` (set by ``make test``, which has just built it) makes that a failure.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import threading
import urllib.error
import urllib.parse
import urllib.request
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from repository import book_config, book_pages
from screenshots import full_page

ROOT = Path(__file__).resolve().parents[2]
HTML = ROOT / "_build" / "html"
EXECUTED = ROOT / "_build" / "jupyter_execute"
CACHE = ROOT / "_build" / ".jupyter_cache"  # executed chapters, from make test's nbval run
SCREENSHOTS = ROOT / "_build" / "screenshots"
# The network is off but for the book's own server: every host name but 127.0.0.1 fails to resolve, so a
# page that needs anything from the internet (MathJax from a CDN, say) shows it.
OFFLINE = "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run", "--window-size=1280,1400",
                  OFFLINE]

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
if not (CHROMIUM and CHROMEDRIVER):
    pytest.skip("no Chromium and chromedriver (Debian: apt-get install chromium chromium-driver)",
                allow_module_level=True)
if not (HTML / "index.html").exists():
    if os.environ.get("ADVLIB_REQUIRE_BOOK") == "1":
        raise RuntimeError(f"{HTML} holds no built book: run `make book` first")
    pytest.skip("the book is not built (make book)", allow_module_level=True)


PAGES = book_pages()
CHAPTERS = [page for page in PAGES if page.startswith("chapters/")]
REPOSITORY = book_config()["repository"]


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep pytest's output to the failures
        pass


@pytest.fixture(scope="module")
def site():
    """The built book served on an ephemeral localhost port; yields its base URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(HTML)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def browser():
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    _SHOWN["url"] = None
    yield driver
    driver.quit()


# The page each worker's browser shows as it loaded (nothing clicked, dragged or scrolled since), if any.
_SHOWN: dict[str, str | None] = {"url": None}


def _open(browser, site, page: str, *, changes: bool = False) -> None:
    """Show ``page``. A page that earlier tests only read is not loaded again: conftest.py runs a page's tests
    one after another on one worker, so each page loads about once instead of once per test. A test that
    clicks, drags, scrolls or navigates passes ``changes=True``, and the next test loads the page afresh."""
    url = urllib.parse.urljoin(site, f"{page}.html")
    if _SHOWN["url"] != url:
        browser.get_log("browser")  # drop earlier pages' messages; this page's, from its loading on, are kept
        browser.get(url)  # returns after the page's load event
    _SHOWN["url"] = None if changes else url


def _screenshot(browser, name: str) -> Path:
    path = SCREENSHOTS / f"{name}.png"
    browser.save_screenshot(str(path))
    return path


IMAGES_JS = """
return Array.from(document.querySelectorAll('main img, article img')).map(img => ({
  src: img.getAttribute('src'), alt: img.getAttribute('alt'), complete: img.complete,
  width: img.naturalWidth, slider: img.classList.contains('advlib-slider-frame'),
  output: img.closest('.cell_output') !== null}));
"""


@pytest.mark.parametrize("page", PAGES)
def test_page_images_load_and_have_alt_text(browser, site, page):
    _open(browser, site, page)
    _screenshot(browser, page.replace("/", "__"))
    images = browser.execute_script(IMAGES_JS)
    broken = [img["src"][:80] for img in images if not img["complete"] or img["width"] == 0]
    assert not broken, f"{page}: images that did not load: {broken}"
    for img in images:
        alt = (img["alt"] or "").strip()
        assert alt, f"{page}: an image without alt text: {img['src'][:80]}"
        assert not re.search(r"\.(png|jpe?g|svg)$|_images/", alt), f"{page}: alt text is a file name: {alt!r}"


@pytest.mark.parametrize("page", PAGES)
def test_page_has_no_error_output_and_no_javascript_error(browser, site, page):
    _open(browser, site, page)
    errors = browser.execute_script(
        "return Array.from(document.querySelectorAll('.output.traceback, .output.error, .output.stderr'))"
        ".map(e => e.innerText.slice(0, 300));")
    assert not errors, f"{page}: error output in the page: {errors}"
    text = browser.find_element("tag name", "main").text
    assert "Traceback (most recent call last)" not in text, f"{page} shows a traceback"
    own = [entry["message"] for entry in browser.get_log("browser")
           if entry["level"] == "SEVERE" and site in entry["message"]]
    assert not own, f"{page}: JavaScript errors from the book's own files: {own}"


def _executed(chapter: str) -> dict:
    """The chapter as the book rendered it: the copy in ``_build/jupyter_execute`` when the build executed it,
    else the executed chapter the build found in its jupyter-cache (put there by ``make test``'s nbval run)."""
    copy = EXECUTED / f"{chapter}.ipynb"
    if copy.exists():
        notebook = json.loads(copy.read_text())
        if any(cell.get("outputs") for cell in notebook["cells"] if cell["cell_type"] == "code"):
            return notebook
    import nbformat
    from jupyter_cache import get_cache

    cache = get_cache(CACHE)
    record = cache.match_cache_notebook(nbformat.read(ROOT / f"{chapter}.ipynb", as_version=4))  # KeyError: none
    return cache.get_cache_bundle(record.pk).nb


def _image_outputs(notebook: dict) -> int:
    return sum(1 for cell in notebook["cells"] if cell["cell_type"] == "code"
               for output in cell.get("outputs", []) if "image/png" in output.get("data", {}))


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_chapter_shows_every_figure_its_code_made(browser, site, chapter):
    executed = _executed(chapter)
    _open(browser, site, chapter)
    shown = [img for img in browser.execute_script(IMAGES_JS) if img["output"] and not img["slider"]]
    made = _image_outputs(executed)
    assert made > 0, f"{chapter} draws no figure"
    assert len(shown) == made, f"{chapter}: the code made {made} figures, the page shows {len(shown)}"


CHECK_CELLS = {chapter: sum(1 for cell in json.loads((ROOT / f"{chapter}.ipynb").read_text())["cells"]
                            if cell["cell_type"] == "code" and cell["metadata"].get("mystnb", {})
                            .get("code_prompt_show", "").startswith("Checked: "))
               for chapter in CHAPTERS}


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_chapter_tables_are_tables_and_checks_are_folded(browser, site, chapter):
    """A table from viz.table is an HTML table on the page; each check cell is one folded box labelled with
    its claim (closed until the reader opens it). The whole page is kept as a screenshot."""
    _open(browser, site, chapter)
    full_page(browser, SCREENSHOTS / f"{chapter.replace('/', '__')}__full.png")
    if "viz.table(" in (ROOT / f"{chapter}.ipynb").read_text():
        cells = browser.find_elements("css selector", ".cell_output .advlib-table table td")
        assert cells, f"{chapter} calls viz.table but shows no HTML table"
    boxes = browser.execute_script(
        "return Array.from(document.querySelectorAll('details')).filter(d => d.querySelector('summary') && "
        "d.querySelector('summary').innerText.includes('Checked: ')).map(d => d.open);")
    assert len(boxes) == CHECK_CELLS[chapter], \
        f"{chapter}: {CHECK_CELLS[chapter]} check cells, {len(boxes)} labelled boxes on the page"
    assert not any(boxes), f"{chapter}: a check box is open before the reader opens it"


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_chapter_launch_button_opens_its_notebook_in_colab(browser, site, chapter):
    _open(browser, site, chapter)
    owner_repo = urllib.parse.urlparse(REPOSITORY["url"]).path.strip("/")
    expected = (f"https://colab.research.google.com/github/{owner_repo}/blob/{REPOSITORY['branch']}/"
                f"{chapter}.ipynb")
    links = [a.get_attribute("href") for a in browser.find_elements("css selector", "a[href*='colab']")]
    assert expected in links, f"{chapter}: no Colab launch link to {expected}; found {links}"
    assert (ROOT / f"{chapter}.ipynb").exists()


@functools.cache
def _fetch(url: str) -> tuple[int, str]:
    """HTTP status and text of a page of the served book (fetched once per run, whichever page links to it)."""
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as error:
        return error.code, ""


@pytest.mark.parametrize("page", PAGES)
def test_internal_links_and_anchors_resolve(browser, site, page):
    _open(browser, site, page)
    hrefs = browser.execute_script("return Array.from(document.querySelectorAll('a[href]')).map(a => a.href);")
    for href in hrefs:
        if not href.startswith(site):
            continue
        target, _, fragment = href.partition("#")
        status, text = _fetch(target)
        assert status == 200, f"{page}: broken link {href} ({status})"
        if fragment and target.endswith(".html"):
            anchor = urllib.parse.unquote(fragment)
            assert re.search(rf'id="{re.escape(anchor)}"', text), f"{page}: no anchor #{anchor} in {target}"


SLIDER_PAGES = [chapter for chapter in CHAPTERS
                if re.search("parameter_slider|epsilon_explorer", (ROOT / f"{chapter}.ipynb").read_text())]


def test_the_epsilon_and_sigma_sliders_are_found():
    assert len(SLIDER_PAGES) >= 2, f"chapters with a slider: {SLIDER_PAGES}"


def _visible_frame(slider):
    frames = [img for img in slider.find_elements("css selector", "img.advlib-slider-frame") if img.is_displayed()]
    assert len(frames) == 1, f"{len(frames)} frames visible at once"
    return frames[0]


@pytest.mark.parametrize("chapter", SLIDER_PAGES)
def test_dragging_a_slider_changes_the_picture(browser, site, chapter):
    from selenium.webdriver.common.action_chains import ActionChains

    _open(browser, site, chapter, changes=True)
    sliders = browser.find_elements("css selector", "div.advlib-slider")
    assert sliders, f"{chapter} calls a slider but the page has none"
    name = chapter.replace("/", "__")
    for k, slider in enumerate(sliders):
        browser.execute_script("arguments[0].scrollIntoView({block: 'center'});", slider)
        rng = slider.find_element("css selector", "input[type=range]")
        label = slider.find_element("css selector", "span")
        before_value, before_label = rng.get_attribute("value"), label.text
        before_src = _visible_frame(slider).get_attribute("src")
        slider.screenshot(str(SCREENSHOTS / f"{name}__slider{k}_before.png"))
        # drag the thumb from the left end to the right end, as a reader would with the mouse
        width = rng.size["width"]
        ActionChains(browser).move_to_element_with_offset(rng, -width // 2 + 2, 0).click_and_hold() \
            .move_by_offset(width - 4, 0).release().perform()
        after_value = rng.get_attribute("value")
        assert after_value != before_value and after_value == rng.get_attribute("max"), \
            f"{chapter}: slider {k} did not move ({before_value} -> {after_value})"
        after_src = _visible_frame(slider).get_attribute("src")
        assert after_src != before_src, f"{chapter}: slider {k} moved but the picture did not change"
        assert label.text != before_label, f"{chapter}: slider {k}'s label still reads {before_label!r}"
        slider.screenshot(str(SCREENSHOTS / f"{name}__slider{k}_after.png"))


@pytest.mark.parametrize("term, page", [("perceptron", "chapters/01_perceptrons"),
                                        ("smoothing", "chapters/13_randomized_smoothing")])
def test_search_box_finds_the_chapter(browser, site, term, page):
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    _open(browser, site, "book/intro", changes=True)
    buttons = [b for b in browser.find_elements("css selector", "button.search-button__button") if b.is_displayed()]
    assert buttons, "the page has no search button"
    buttons[0].click()  # opens the search dialog, as a reader's click does
    box = WebDriverWait(browser, 10).until(
        lambda d: next((b for b in d.find_elements("css selector", "input[name=q]") if b.is_displayed()), None))
    box.send_keys(term, Keys.ENTER)
    WebDriverWait(browser, 30).until(lambda d: "search.html" in d.current_url)
    WebDriverWait(browser, 30).until(
        lambda d: d.find_elements("css selector", "#search-results ul.search li")
        or "did not match" in d.find_element("id", "search-results").text)
    results = [a.get_attribute("href") for a in browser.find_elements("css selector", "#search-results ul.search li a")]
    _screenshot(browser, f"search__{term}")
    assert any(f"{page}.html" in href for href in results), f"searching {term!r} did not find {page}: {results}"


MATH_JS = """
const done = arguments[arguments.length - 1];
if (!window.MathJax || !MathJax.startup || !MathJax.startup.promise) {
  done({loaded: false, math: document.querySelectorAll('main .math').length,
        text: document.querySelector('main').innerText});
  return;
}
MathJax.startup.promise.then(() => {
  const math = Array.from(document.querySelectorAll('main .math'));
  const scripts = Array.from(document.querySelectorAll('script[src*="mathjax"], script[src*="MathJax"]'));
  done({loaded: true, math: math.length,
        untypeset: math.filter(m => !m.querySelector('mjx-container')).map(m => m.textContent.slice(0, 80)),
        errors: document.querySelectorAll('main mjx-merror').length,
        sources: scripts.map(s => s.src), text: document.querySelector('main').innerText});
});
"""


@pytest.mark.parametrize("page", PAGES)
def test_page_math_is_typeset_with_the_network_off(browser, site, page):
    """MathJax comes from the book itself; every formula is typeset; no raw ``\\(`` or ``$$`` is left."""
    _open(browser, site, page)
    browser.set_script_timeout(60)
    state = browser.execute_async_script(MATH_JS)
    if state["math"] or state["loaded"]:  # Sphinx loads MathJax only on pages with formulas
        assert state["loaded"], f"{page}: MathJax did not load with the network off"
        assert state["sources"] and all(src.startswith(site) for src in state["sources"]), \
            f"{page}: MathJax from elsewhere than the book: {state['sources']}"
        assert not state["untypeset"], f"{page}: formulas left untypeset: {state['untypeset'][:3]}"
        assert state["errors"] == 0, f"{page}: {state['errors']} formulas MathJax could not read"
    for raw in ("\\(", "\\)", "$$", "\\begin{"):
        assert raw not in state["text"], f"{page}: raw TeX {raw!r} left in the page"


EXERCISE_PAGES = [chapter for chapter in CHAPTERS if "{solution-start}" in (ROOT / f"{chapter}.ipynb").read_text()]


@pytest.mark.parametrize("chapter", EXERCISE_PAGES)
def test_exercise_solutions_are_folded_until_the_reader_opens_one(browser, site, chapter):
    """Every solution is a toggle, closed on arrival; a click opens it and shows the solution's code and
    output (the first solution that runs code is kept as screenshots, folded and unfolded)."""
    from selenium.webdriver.support.ui import WebDriverWait

    _open(browser, site, chapter, changes=True)
    WebDriverWait(browser, 10).until(lambda d: d.find_elements("css selector", ".solution .toggle-button"))
    solutions = browser.find_elements("css selector", "div.solution.dropdown")
    exercises = browser.find_elements("css selector", "div.exercise")
    assert len(exercises) >= 3 and len(solutions) == len(exercises), \
        f"{chapter}: {len(exercises)} exercises, {len(solutions)} folded solutions"
    for solution in solutions:
        body = solution.find_element("css selector", "section")
        assert not body.is_displayed(), f"{chapter}: a solution is open on arrival"
    runs = [s for s in solutions if s.find_elements("css selector", ".cell")]
    assert runs, f"{chapter}: no solution holds code"
    solution = runs[0]
    exercise = solution.find_element("xpath", "preceding::div[contains(@class, 'exercise')][1]")
    browser.execute_script("arguments[0].scrollIntoView({block: 'start'});", exercise)
    name = chapter.replace("/", "__")
    _screenshot(browser, f"{name}__exercise_folded")
    solution.find_element("css selector", ".toggle-button").click()
    WebDriverWait(browser, 10).until(lambda d: solution.find_element("css selector", "section").is_displayed())
    assert solution.find_element("css selector", ".cell_input").is_displayed()
    browser.execute_script("arguments[0].scrollIntoView({block: 'start'});", exercise)
    _screenshot(browser, f"{name}__exercise_unfolded")


API_PAGES = [page for page in PAGES if page.startswith("book/api/") and not page.endswith("/index")]


def test_the_api_reference_has_a_page_per_part_of_advlib():
    assert len(API_PAGES) >= 8, API_PAGES


@pytest.mark.parametrize("page", API_PAGES)
def test_api_page_shows_signatures_and_docstrings(browser, site, page):
    _open(browser, site, page)
    entries = browser.find_elements("css selector", "dl.py.function, dl.py.class")
    assert entries, f"{page} documents no function or class"
    for entry in entries:
        term = entry.find_element("css selector", "dt")
        signature = term.text
        assert (term.get_attribute("id") or "").startswith("advlib.") and "(" in signature, \
            f"{page}: {signature!r} is not a signature under advlib's public name"
        assert entry.find_element("css selector", "dd").text.strip(), f"{page}: {signature!r} has no docstring"
    full_page(browser, SCREENSHOTS / f"{page.replace('/', '__')}__full.png")
