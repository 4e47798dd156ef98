"""The ChatQnA web UI in a real browser: headless Chromium (Debian's chromium and chromium-driver,
driven by python3-selenium) against the real pipeline that `comps up` starts (SmolLM2, MiniLM, an
empty store), and against chatqna processes wired to the mock backends for what a small real model
cannot be made to do on demand: an answer full of markup, a dead LLM, an API key.

Steps (each saves a screenshot in --shots, desktop 1280x900 and phone 390x844):
  open / ; upload a document (the file input of the drop zone) and see it listed; ask about it
  and see tokens arrive while the answer streams, then its sources (the file); copy; regenerate;
  stop a long answer; drop a second file on the drop zone; a refused link; k = 1 without rerank
  in the settings gives one source; delete one document, then all; the phone-width page and panel; an answer with
  injection-like markdown renders as text (no element, no script run), the same through OPEA's
  framing; the dark theme; a dead
  llm reads as "the llm service is not answering"; a key-protected chatqna asks for the key once.

  python3 tests/ui/ui_test.py --bin target/debug --shots target/ui-screenshots

Only loopback is a target; nothing of the page comes from the network (the browser runs with
networking to other hosts unused: every URL it opens is 127.0.0.1). Exits non-zero on failure."""

import argparse
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts" / "bench"))
from benchlib import ChatQnA, Procs, free_port  # noqa: E402

FACT = "The Quillon observatory dome is painted saffron, and its keeper is Mirela Vost."
DOC = f"""# Quillon observatory

{FACT}

The dome turns on brass wheels. <img src=x onerror="window.__pwned='doc-img'"> <script>window.__pwned='doc-script'</script>
"""
INJECTION = ('**bold** <img src=x onerror="window.__pwned=\'img\'"> <script>window.__pwned=\'script\'</script> '
             '[click](javascript:window.__pwned=\'link\') <b>raw</b> done')


def browser(shots):
    opts = webdriver.ChromeOptions()
    opts.binary_location = os.environ.get("CHROMIUM", "/usr/bin/chromium")
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
              "--window-size=1280,900", "--no-first-run", "--disable-extensions",
              "--disable-background-networking", "--disable-component-update", "--disable-sync"):
        opts.add_argument(a)
    driver = webdriver.Chrome(service=Service(os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver")), options=opts)
    driver.set_page_load_timeout(30)
    driver.shots = shots
    driver.shot_no = 0
    return driver


def shot(d, name):
    d.shot_no += 1
    path = os.path.join(d.shots, f"{d.shot_no:02d}-{name}.png")
    d.save_screenshot(path)
    print(f"        screenshot {path}", flush=True)


def wait(what, cond, timeout=60, every=0.05):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            v = cond()
        except Exception:  # the page is changing under us
            v = None
        if v:
            return v
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what}")


def by_id(d, i):
    return d.find_element(By.ID, i)


def last_answer(d):
    return d.find_elements(By.CSS_SELECTOR, "#messages .msg.assistant")[-1]


def ask(d, question):
    q = by_id(d, "question")
    q.send_keys(question)
    q.send_keys(Keys.ENTER)
    wait("the answer to start", lambda: len(d.find_elements(By.CSS_SELECTOR, "#messages .msg.assistant")) > 0)


def streamed_answer(d, question, timeout=240):
    """Ask; return (text seen while the stop button still showed, final text)."""
    before = len(d.find_elements(By.CSS_SELECTOR, "#messages .msg.assistant"))
    ask(d, question)
    wait("a new answer", lambda: len(d.find_elements(By.CSS_SELECTOR, "#messages .msg.assistant")) > before)
    partial = ""
    deadline = time.time() + timeout
    while time.time() < deadline:
        busy = by_id(d, "stop").is_displayed()
        text = last_answer(d).find_element(By.CSS_SELECTOR, ".body").text
        if busy and text and not partial:
            partial = text
        if not busy:
            return partial, text
        time.sleep(0.03)
    raise AssertionError("the answer did not end")


def no_injection(d):
    assert d.execute_script("return window.__pwned === undefined"), d.execute_script("return window.__pwned")
    bad = d.find_elements(By.CSS_SELECTOR, "#messages img, #messages script, #messages b, #messages a[href^='javascript']")
    assert not bad, [e.get_attribute("outerHTML") for e in bad]


def open_docs(d):
    if by_id(d, "toggle-docs").get_attribute("aria-expanded") != "true":
        by_id(d, "toggle-docs").click()
    wait("the documents panel", lambda: by_id(d, "docs").is_displayed())


def listed(d):
    return [e.text for e in d.find_elements(By.CSS_SELECTOR, "#doc-list .doc-name")]


def real_pipeline(d, url, work):
    d.get(url + "/")
    assert d.title == "ChatQnA", d.title
    wait("the page's script", lambda: d.execute_script("return document.readyState") == "complete")
    shot(d, "desktop-open")

    # Upload through the file input of the drop zone; the list shows it.
    doc = Path(work) / "quillon-observatory.md"
    doc.write_text(DOC)
    open_docs(d)
    by_id(d, "file-input").send_keys(str(doc))
    wait("the upload to be stored", lambda: any("stored" in e.text for e in d.find_elements(By.CSS_SELECTOR, ".upload-status")), 120)
    wait("the document in the list", lambda: "quillon-observatory.md" in listed(d))
    shot(d, "desktop-uploaded")
    by_id(d, "toggle-docs").click()

    # Ask about it: tokens arrive before the answer ends; the sources name the file.
    partial, final = streamed_answer(d, "What colour is the Quillon observatory dome?")
    print(f"        streamed: {len(partial)} chars seen mid-stream, {len(final)} at the end", flush=True)
    assert partial and len(final) >= len(partial), (partial, final)
    answer = last_answer(d)
    summary = answer.find_element(By.CSS_SELECTOR, ".source-list summary")
    summary.click()
    files = [e.text for e in answer.find_elements(By.CSS_SELECTOR, ".source-file")]
    assert "quillon-observatory.md" in files, files
    texts = " ".join(e.text for e in answer.find_elements(By.CSS_SELECTOR, ".source-text"))
    assert "saffron" in texts and "<img src=x" in texts, texts
    no_injection(d)
    shot(d, "desktop-answer-sources")

    # Copy and regenerate.
    copy = [b for b in answer.find_elements(By.CSS_SELECTOR, ".tools button") if b.text == "Copy"][0]
    copy.click()
    wait("the copy to be confirmed", lambda: copy.text == "Copied", 5)
    by_id(d, "regenerate").click()
    wait("the regenerated answer to end", lambda: not by_id(d, "stop").is_displayed() and last_answer(d).get_attribute("aria-busy") is None, 240)
    assert len(d.find_elements(By.CSS_SELECTOR, "#messages .msg.assistant")) == 1, "regenerate replaces the last answer"

    # Stop a long answer as soon as it streams.
    ask(d, "Write a very long story about the keeper of the Quillon observatory, with many chapters.")
    wait("the long answer to stream", lambda: last_answer(d).find_element(By.CSS_SELECTOR, ".body").text, 120)
    t0 = time.time()
    by_id(d, "stop").click()
    wait("the stop to take effect", lambda: not by_id(d, "stop").is_displayed(), 10)
    assert time.time() - t0 < 10
    assert "Stopped." in last_answer(d).text, last_answer(d).text
    shot(d, "desktop-stopped")

    # A second document dropped on the drop zone (a DataTransfer holding a File, as a drag from
    # the desktop delivers it).
    open_docs(d)
    d.execute_script("""
        const dt = new DataTransfer();
        dt.items.add(new File([arguments[0]], "harbour-notes.txt", {type: "text/plain"}));
        document.getElementById("drop").dispatchEvent(new DragEvent("drop", {dataTransfer: dt, bubbles: true, cancelable: true}));
    """, "The harbour crane at Quillon lifts four tonnes. It was built by Ansel Marrow in 1911.")
    wait("the dropped document in the list", lambda: "harbour-notes.txt" in listed(d), 120)

    # A link to this machine is refused by the retriever: the refusal is shown, not a stack.
    by_id(d, "link-input").send_keys("http://127.0.0.1:9/notes.html")
    by_id(d, "link-input").send_keys(Keys.ENTER)
    err = wait("the link refusal", lambda: by_id(d, "error").text if by_id(d, "error").is_displayed() else None, 30)
    assert err.startswith("The request was refused") or "refused" in err.lower(), err
    print(f"        link refused: {err.splitlines()[0]}", flush=True)
    by_id(d, "toggle-docs").click()

    # Settings reach the pipeline: k = 1 without rerank gives one source.
    by_id(d, "toggle-settings").click()
    k = by_id(d, "set-k")
    k.clear()
    k.send_keys("1")
    rerank = by_id(d, "set-rerank")
    if rerank.is_selected():
        rerank.click()
    by_id(d, "toggle-settings").click()
    streamed_answer(d, "Who built the harbour crane at Quillon?")
    n = len(last_answer(d).find_elements(By.CSS_SELECTOR, ".source"))
    assert n == 1, f"{n} sources with k = 1"
    shot(d, "desktop-settings-k1")
    by_id(d, "toggle-settings").click()
    by_id(d, "reset-settings").click()
    by_id(d, "toggle-settings").click()

    # Delete one document, then all.
    open_docs(d)
    d.find_element(By.CSS_SELECTOR, "button[aria-label='Delete quillon-observatory.md']").click()
    wait("the document to leave the list", lambda: "quillon-observatory.md" not in listed(d), 30)
    assert "harbour-notes.txt" in listed(d)
    shot(d, "desktop-deleted")
    by_id(d, "delete-all").click()
    d.switch_to.alert.accept()
    wait("an empty list", lambda: not listed(d) and "No documents yet." in by_id(d, "doc-list").text, 30)

    # Phone width: the conversation, then the documents panel over it.
    d.set_window_size(390, 844)
    by_id(d, "toggle-docs").click()
    shot(d, "phone-chat")
    open_docs(d)
    width = d.execute_script("return document.documentElement.scrollWidth")
    assert width <= 400, f"the page scrolls sideways at phone width ({width} px)"
    shot(d, "phone-documents")
    d.set_window_size(1280, 900)


def mock_pipelines(d, bin_dir, procs):
    mock_port = free_port()
    procs.start([os.path.join(bin_dir, "mock-backends"), "--port", str(mock_port)], mock_port,
                {"MOCK_REPLY": INJECTION, "MOCK_TOKEN_DELAY_MS": "20"})
    wiring = {"RUST_LOG": "warn"}
    for host, port in (("EMBEDDING_SERVER_HOST_IP", "EMBEDDING_SERVER_PORT"), ("RETRIEVER_SERVICE_HOST_IP", "RETRIEVER_SERVICE_PORT"),
                       ("RERANK_SERVER_HOST_IP", "RERANK_SERVER_PORT"), ("LLM_SERVER_HOST_IP", "LLM_SERVER_PORT")):
        wiring[host], wiring[port] = "127.0.0.1", str(mock_port)
    chatqna = os.path.join(bin_dir, "chatqna")

    # An answer full of markup renders as text; a key-protected chatqna asks for its key once.
    keyed = free_port()
    procs.start([chatqna, "--port", str(keyed)], keyed, {**wiring, "COMPS_API_KEY": "ui-secret"})
    d.get(f"http://127.0.0.1:{keyed}/")
    wait("the key dialog", lambda: by_id(d, "key-dialog").is_displayed(), 10)
    shot(d, "desktop-api-key")
    by_id(d, "key-input").send_keys("ui-secret")
    by_id(d, "key-input").send_keys(Keys.ENTER)
    wait("the dialog to close", lambda: not by_id(d, "key-dialog").is_displayed(), 5)
    _, final = streamed_answer(d, "Say something with markup.", 60)
    assert "<img src=x" in final and "<script>" in final and "[click](javascript:" in final, final
    assert "<b>raw</b>" in final, final
    body = last_answer(d).find_element(By.CSS_SELECTOR, ".body")
    assert body.find_elements(By.CSS_SELECTOR, "strong"), "markdown bold still renders"
    no_injection(d)
    assert d.execute_script("return sessionStorage.getItem('chatqna.api_key')") == "ui-secret"
    shot(d, "desktop-injection-as-text")
    # The same answer through OPEA's /v1/chatqna framing (data: b'...' frames decoded in the page).
    by_id(d, "toggle-settings").click()
    by_id(d, "set-opea").click()
    by_id(d, "toggle-settings").click()
    _, opea = streamed_answer(d, "Say something with markup.", 60)
    assert opea.splitlines()[0] == final.splitlines()[0], (opea, final)  # (OPEA frames carry no finish reason)
    by_id(d, "toggle-settings").click()
    by_id(d, "set-opea").click()
    by_id(d, "toggle-settings").click()
    # The system's dark theme is followed.
    d.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": [{"name": "prefers-color-scheme", "value": "dark"}]})
    bg = d.execute_script("return getComputedStyle(document.body).backgroundColor")
    assert bg == "rgb(21, 24, 28)", bg
    shot(d, "desktop-dark")
    d.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": [{"name": "prefers-color-scheme", "value": "light"}]})

    # A dead llm: the error names the service, not a stack.
    dead = free_port()
    gone = free_port()
    procs.start([chatqna, "--port", str(dead), "--retries", "0"], dead, {**wiring, "LLM_SERVER_PORT": str(gone)})
    d.get(f"http://127.0.0.1:{dead}/")
    ask(d, "Anyone there?")
    err = wait("the error line", lambda: by_id(d, "error").text if by_id(d, "error").is_displayed() else None, 60)
    assert err.startswith("The llm service is not answering."), err
    shot(d, "desktop-llm-down")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", default=str(ROOT / "target" / "debug"), help="the build to run (comps included)")
    ap.add_argument("--shots", default=str(ROOT / "target" / "ui-screenshots"), help="where screenshots go")
    args = ap.parse_args()
    os.makedirs(args.shots, exist_ok=True)
    # Screenshots of an earlier run go, so that the directory shows this run only (only the
    # files this test names: NN-name.png).
    for old in Path(args.shots).glob("[0-9][0-9]-*.png"):
        old.unlink()
    models = Path(os.environ.get("MODELS_DIR", ROOT / "models"))
    up = ["--embedding-model", models / "all-MiniLM-L6-v2", "--llm-model", models / "SmolLM2-135M-Instruct",
          "--no-guardrail", "--no-ingest"]
    failed = 0
    d = browser(args.shots)
    try:
        with tempfile.TemporaryDirectory(prefix="comps-ui-") as work:
            for name, run in (("real pipeline", lambda: real_pipeline_with_stack(d, work, up, args.bin)),
                              ("mock pipelines", lambda: mock_with_procs(d, args.bin))):
                t0 = time.time()
                try:
                    run()
                    print(f"  ok    {name} ({time.time() - t0:.1f} s)", flush=True)
                except Exception:
                    failed += 1
                    shot(d, "failure")
                    print(f"  FAIL  {name}\n{traceback.format_exc()}", flush=True)
                    for entry in d.get_log("browser") if hasattr(d, "get_log") else []:
                        print(f"        console: {entry}", flush=True)
    finally:
        d.quit()
    print(f"ui tests: {2 - failed} passed, {failed} failed; screenshots in {args.shots}")
    return 1 if failed else 0


def real_pipeline_with_stack(d, work, up, bin_dir):
    data = os.path.join(work, "stack")
    os.makedirs(data)
    with ChatQnA(data, up, timeout=600, bin_dir=bin_dir) as urls:
        real_pipeline(d, urls["chatqna"], work)


def mock_with_procs(d, bin_dir):
    with Procs() as procs:
        mock_pipelines(d, bin_dir, procs)


if __name__ == "__main__":
    sys.exit(main())
