"""tasks/serve.py: the JSON API, its batching, its errors, its page.

Quick tests serve a stand-in generator (titles without a model) on a real
uvicorn server in a thread; slow ones start `tasks/serve.py` on a finished
tiny run in a subprocess, drive the page in headless Chromium, and stop
the server with SIGTERM.
"""

import asyncio
import concurrent.futures
import json
import os
import re
import runpy
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from unittest import mock

import pytest

from tasks import serve
from tasks.lib.abstracts import Title
from tasks.lib.decoding_options import DecodingOptions
from tasks.lib.decoding_options import Limits
from tasks.lib.serving import PAGE
from tasks.lib.serving import Batcher
from tasks.lib.serving import build_app
from tests.common import ROOT
from tests.common import running

SCRIPT = ROOT / "tasks" / "serve.py"


class StandIn:
    """A generator's interface, without a model: a text's titles are the
    text reversed and numbered, scored by length; calls are recorded."""

    title_maxlen = 12
    vocab_size = 50
    defaults = DecodingOptions()

    def __init__(self, delay=0.0):
        self.delay, self.calls = delay, []

    def describe(self):
        return {"origin": "stand-in", "path": "-", "title_maxlen": 12}

    def generate(self, texts, options, batch_size=None, progress=False):
        self.calls.append((list(texts), options))
        time.sleep(self.delay)
        return [titles_of(text, options) for text in texts]


def titles_of(text, options):
    count = options.n if options.sample else options.nbest
    return [
        Title(f"{text[::-1]}{rank}", -float(len(text) + rank))
        for rank in range(count)
    ]


def request(url, body=None, method=None):
    """(status, JSON answer) of a request; `body` a dict or raw bytes."""
    data = body if isinstance(body, (bytes, type(None))) else None
    if data is None and body is not None:
        data = json.dumps(body, ensure_ascii=False).encode("utf-8")
    call = urllib.request.Request(url, data=data, method=method)
    try:
        with urllib.request.urlopen(call, timeout=120) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


@pytest.fixture(scope="module")
def stand_in():
    generator = StandIn(delay=0.05)
    with running(build_app(generator)) as base:
        yield base, generator


# Without a model ----------------------------------------------------------


def test_health_info_and_page(stand_in):
    base, _ = stand_in
    assert request(f"{base}/health") == (200, {"status": "ok"})
    status, info = request(f"{base}/info")
    assert status == 200
    assert info["model"]["origin"] == "stand-in"
    assert info["limits"]["max_beams"] == Limits().max_beams
    assert info["defaults"]["beams"] == 1
    with urllib.request.urlopen(f"{base}/", timeout=30) as response:
        page = response.read().decode("utf-8")
    assert '<textarea id="text"' in page and "<script>" in page
    # No external assets: every src and href is relative.
    assert not re.search(r'(src|href)="(https?:)?//', page)


def test_one_text_and_many(stand_in):
    base, _ = stand_in
    status, answer = request(
        f"{base}/generate", {"text": "摘要", "beams": 3, "nbest": 2}
    )
    assert status == 200
    assert answer["results"] == [
        {
            "titles": [
                {"title": "要摘0", "score": -2.0},
                {"title": "要摘1", "score": -3.0},
            ]
        }
    ]
    assert answer["options"]["beams"] == 3
    texts = ["一", "二二", "三三三"]
    status, answer = request(f"{base}/generate", {"texts": texts})
    assert status == 200
    assert [r["titles"][0]["title"] for r in answer["results"]] == [
        "一0",
        "二二0",
        "三三三0",
    ]


def test_concurrent_requests_share_decoder_calls(stand_in):
    base, generator = stand_in
    texts = [f"text {i}" for i in range(24)]
    generator.calls.clear()
    with concurrent.futures.ThreadPoolExecutor(len(texts)) as pool:
        answers = list(
            pool.map(
                lambda text: request(
                    f"{base}/generate", {"text": text, "beams": 2, "nbest": 2}
                ),
                texts,
            )
        )
    options = DecodingOptions(beams=2, nbest=2)
    for text, (status, answer) in zip(texts, answers):
        assert status == 200
        expected = [t.as_json() for t in titles_of(text, options)]
        assert answer["results"] == [{"titles": expected}]
    assert sum(len(call[0]) for call in generator.calls) == len(texts)
    assert len(generator.calls) < len(texts) / 2, generator.calls


BAD_REQUESTS = [
    (b"{bad", 400, "body"),
    (b"[1, 2]", 400, "body"),
    (b'{"text": "a", "topp": NaN, "sample": true}', 400, "body"),
    (b"\xff\xfe{", 400, "body"),
    ({}, 400, "text"),
    ({"text": ""}, 400, "text"),
    ({"text": "  \n"}, 400, "text"),
    ({"text": 5}, 400, "text"),
    ({"text": "a", "texts": ["b"]}, 400, "text"),
    ({"text": "x" * 10_001}, 400, "text"),
    ({"texts": []}, 400, "texts"),
    ({"texts": "a"}, 400, "texts"),
    ({"texts": ["a"] * 33}, 400, "texts"),
    ({"texts": ["a", 3]}, 400, "texts[1]"),
    ({"texts": ["a", ""]}, 400, "texts[1]"),
    ({"text": "a", "beams": 9}, 400, "beams"),
    ({"text": "a", "beams": 0}, 400, "beams"),
    ({"text": "a", "beams": "3"}, 400, "beams"),
    ({"text": "a", "beams": True}, 400, "beams"),
    ({"text": "a", "beams": 2.5}, 400, "beams"),
    ({"text": "a", "nbest": 2}, 400, "nbest"),
    ({"text": "a", "topk": 3}, 400, "topk"),
    ({"text": "a", "sample": True, "nbest": 2}, 400, "nbest"),
    ({"text": "a", "sample": "yes"}, 400, "sample"),
    ({"text": "a", "sample": True, "topp": 1.5}, 400, "topp"),
    ({"text": "a", "sample": True, "topk": 51}, 400, "topk"),
    ({"text": "a", "sample": True, "n": 9}, 400, "n"),
    ({"text": "a", "sample": True, "seed": -1}, 400, "seed"),
    ({"text": "a", "length_penalty": 9}, 400, "length_penalty"),
    ({"text": "a", "min_length": 13}, 400, "min_length"),
    ({"text": "a", "colour": "red"}, 400, "colour"),
    (b'{"text": "' + b"x" * (1 << 20) + b'"}', 413, "body"),
]


@pytest.mark.parametrize(
    "body, status, field",
    BAD_REQUESTS,
    ids=[f"{field}-{i}" for i, (_, _, field) in enumerate(BAD_REQUESTS)],
)
def test_a_bad_request_is_a_4xx_naming_the_field(stand_in, body, status, field):
    base, _ = stand_in
    code, answer = request(f"{base}/generate", body)
    assert (code, answer["field"]) == (status, field), answer
    assert answer["error"].startswith(f"{field}: "), answer
    # The server keeps serving.
    assert request(f"{base}/generate", {"text": "ok"})[0] == 200


def test_the_page_is_installed_with_the_package():
    with mock.patch("setuptools.setup") as setup:
        runpy.run_path(str(ROOT / "setup.py"))
    patterns = setup.call_args.kwargs["package_data"]["tasks.lib"]
    folder = ROOT / "tasks" / "lib"
    assert PAGE in {path for p in patterns for path in folder.glob(p)}


def test_unknown_routes_and_methods_answer_in_json(stand_in):
    base, _ = stand_in
    assert request(f"{base}/nothing") == (
        404,
        {"error": "Not Found", "field": None},
    )
    assert request(f"{base}/generate")[0] == 405


def test_a_decoder_error_is_a_500_and_the_server_goes_on():
    class Failing(StandIn):
        def generate(self, texts, options, batch_size=None, progress=False):
            if "boom" in texts:
                raise RuntimeError("decoder failed")
            return super().generate(texts, options)

    with running(build_app(Failing())) as base:
        status, answer = request(f"{base}/generate", {"text": "boom"})
        assert status == 500
        assert answer["error"] == "RuntimeError: decoder failed"
        assert request(f"{base}/generate", {"text": "fine"})[0] == 200


def test_the_batcher_groups_by_options_and_keeps_seeded_samples_alone():
    generator = StandIn()
    beam = DecodingOptions(beams=2, nbest=2)
    seeded = DecodingOptions(sample=True, n=2, seed=3)

    async def main():
        batcher = Batcher(generator.generate, max_batch=32, wait=0.05)
        await batcher.start()
        jobs = [
            (["a", "b"], beam),
            (["c"], DecodingOptions()),
            (["d"], beam),
            (["e"], seeded),
            (["f"], seeded),
        ]
        answers = await asyncio.gather(
            *(batcher.submit(texts, options) for texts, options in jobs)
        )
        await batcher.stop()
        return jobs, answers, batcher.counts

    jobs, answers, counts = asyncio.run(main())
    for (texts, options), answer in zip(jobs, answers):
        assert answer == [titles_of(text, options) for text in texts]
    calls = sorted(
        (tuple(texts), options) for texts, options in generator.calls
    )
    assert [texts for texts, _ in calls] == [
        ("a", "b", "d"),
        ("c",),
        ("e",),
        ("f",),
    ]
    assert counts == {"requests": 5, "texts": 6, "decoder_calls": 4}


def test_help_answers_before_the_backend_loads():
    code = (
        "import runpy, sys\n"
        "sys.argv = ['serve.py', '--help']\n"
        "try:\n"
        "    runpy.run_path('tasks/serve.py', run_name='__main__')\n"
        "except SystemExit:\n"
        "    pass\n"
        "print(sorted({'keras', 'tensorflow', 'jax', 'uvicorn'} "
        "& set(sys.modules)))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ},
    )
    assert "Usage:" in result.stdout
    assert result.stdout.splitlines()[-1] == "[]", result.stdout
    for action in serve.build_parser()._actions:
        assert action.help, action.dest


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["nowhere"], "nowhere: no such directory"),
        ([".", "--port", "-1"], "--port -1: expected 0 or more"),
        ([".", "--max-beams", "0"], "--max-beams 0: expected 1 or more"),
    ],
)
def test_argument_errors_are_one_line(argv, expected, capsys):
    with pytest.raises(SystemExit) as stop:
        serve.main(argv)
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert err.strip() == f"serve.py: error: {expected}"


# A real server on a finished run -----------------------------------------


@pytest.fixture(scope="module")
def server(tiny_run):
    """`tasks/serve.py` on the tiny run, on a free port: (process, URL)."""
    process = subprocess.Popen(
        [sys.executable, str(SCRIPT), str(tiny_run), "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**os.environ},
    )
    line = process.stdout.readline()  # once the model is loaded
    match = re.search(r"on (http://127\.0\.0\.1:\d+)/", line)
    if not match:
        process.kill()
        pytest.fail(f"no server: {line!r} {process.stderr.read()[-3000:]}")
    yield process, match.group(1)
    if process.poll() is None:
        process.kill()
        process.wait()


@pytest.mark.slow
def test_the_server_titles_as_the_run_did(server, tiny_run, tiny_predictions):
    process, base = server
    assert request(f"{base}/health") == (200, {"status": "ok"})
    status, info = request(f"{base}/info")
    assert status == 200
    assert info["model"]["origin"] == "run"
    assert info["model"]["path"] == str(tiny_run)
    assert (info["model"]["maxlen"], info["model"]["title_maxlen"]) == (64, 12)
    for beam in (1, 2):
        rows = tiny_predictions[beam][:8]
        status, answer = request(
            f"{base}/generate", {"texts": [s for s, _ in rows], "beams": beam}
        )
        assert status == 200, answer
        titles = [r["titles"][0]["title"] for r in answer["results"]]
        assert titles == [p for _, p in rows]
    status, answer = request(f"{base}/generate", {"text": "x", "beams": 9})
    assert (status, answer["field"]) == (400, "beams")
    assert request(f"{base}/generate", {"text": "x"})[0] == 200


@pytest.mark.slow
def test_concurrent_requests_equal_one_at_a_time(server, tiny_predictions):
    _, base = server
    rows = tiny_predictions[2][:24]

    def ask(source):
        body = {"text": source, "beams": 2, "nbest": 2}
        status, answer = request(f"{base}/generate", body)
        assert status == 200, answer
        return answer["results"][0]["titles"]

    alone = [ask(source) for source, _ in rows]
    before = request(f"{base}/info")[1]["counts"]
    with concurrent.futures.ThreadPoolExecutor(len(rows)) as pool:
        together = list(pool.map(ask, [source for source, _ in rows]))
    after = request(f"{base}/info")[1]["counts"]
    for one, shared, (_, prediction) in zip(alone, together, rows):
        assert [t["title"] for t in shared] == [t["title"] for t in one]
        assert [t["score"] for t in shared] == pytest.approx(
            [t["score"] for t in one], abs=1e-4
        )
        assert one[0]["title"] == prediction
    assert after["requests"] - before["requests"] == len(rows)
    assert after["decoder_calls"] - before["decoder_calls"] < len(rows)


class Browser:
    """Headless Chromium, driven over the Chrome DevTools protocol."""

    def __init__(self, chromium, folder):
        import websocket

        self.process = subprocess.Popen(
            [
                chromium,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--remote-debugging-port=0",
                "--remote-allow-origins=*",
                f"--user-data-dir={folder}",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        # Chromium writes the port it chose here.
        port_file = folder / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not port_file.is_file() or not port_file.read_text().strip():
            assert time.monotonic() < deadline, "Chromium did not start"
            time.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        with urllib.request.urlopen(
            f"http://127.0.0.1:{port}/json/list", timeout=30
        ) as response:
            targets = json.loads(response.read())
        page = next(t for t in targets if t["type"] == "page")
        self.socket = websocket.create_connection(
            page["webSocketDebuggerUrl"], timeout=60, suppress_origin=True
        )
        self.calls = 0

    def call(self, method, **params):
        self.calls += 1
        self.socket.send(
            json.dumps({"id": self.calls, "method": method, "params": params})
        )
        while True:
            message = json.loads(self.socket.recv())
            if message.get("id") == self.calls:
                assert "error" not in message, message
                return message["result"]

    def evaluate(self, expression):
        result = self.call(
            "Runtime.evaluate", expression=expression, returnByValue=True
        )
        assert "exceptionDetails" not in result, result
        return result["result"].get("value")

    def wait_for(self, expression, seconds=120):
        """Until `expression` is true (an error, e.g. of a page still
        loading, counts as false)."""
        guarded = f"(() => {{ try {{ return !!({expression}); }} "
        guarded += "catch (error) { return false; } })()"
        deadline = time.monotonic() + seconds
        while not self.evaluate(guarded):
            assert time.monotonic() < deadline, f"never true: {expression}"
            time.sleep(0.1)

    def close(self):
        self.socket.close()
        self.process.terminate()
        self.process.wait(30)


TITLES_IN_THE_PAGE = """JSON.stringify(
    [...document.querySelectorAll("#titles tr.title")].map(
        (row) => [row.cells[1].textContent, row.cells[2].textContent]))"""


@pytest.mark.slow
def test_the_page_titles_a_pasted_abstract(server, tiny_predictions, tmp_path):
    import shutil

    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("no chromium: apt-get install chromium (as .ci/run does)")
    _, base = server
    source, prediction = tiny_predictions[2][3]

    def api(beams):
        body = {"text": source, "beams": beams, "nbest": beams}
        status, answer = request(f"{base}/generate", body)
        assert status == 200
        titles = answer["results"][0]["titles"]
        return [[t["title"], f"{t['score']:.4f}"] for t in titles]

    browser = Browser(chromium, tmp_path)
    try:
        browser.call("Page.navigate", url=f"{base}/")
        browser.wait_for("document.getElementById('model').textContent")
        assert "layers" in browser.evaluate(
            "document.getElementById('model').textContent"
        )
        browser.evaluate("document.getElementById('text').focus()")
        browser.call("Input.insertText", text=source)  # as a paste does
        browser.evaluate("document.getElementById('submit').click()")
        browser.wait_for("document.querySelector('#titles tr.title')")
        shown = json.loads(browser.evaluate(TITLES_IN_THE_PAGE))
        status_line = browser.evaluate(
            "document.getElementById('status').textContent"
        )
        # Beam size 2, as a person sets it: the run's own beam-2 title.
        browser.evaluate(
            "document.querySelector('#titles tbody').replaceChildren();"
            "document.getElementById('beams').value = 2;"
            "document.getElementById('nbest').value = 2;"
            "document.getElementById('submit').click()"
        )
        browser.wait_for("document.querySelector('#titles tr.title')")
        at_two = json.loads(browser.evaluate(TITLES_IN_THE_PAGE))
        # A link with the abstract in it asks at once.
        query = urllib.parse.urlencode({"text": source})
        browser.call("Page.navigate", url=f"{base}/?{query}")
        browser.wait_for("location.search.startsWith('?text=')")
        browser.wait_for("document.querySelector('#titles tr.title')")
        linked = json.loads(browser.evaluate(TITLES_IN_THE_PAGE))
    finally:
        browser.close()
    assert shown == api(3)  # the page's defaults: beam 3, three titles
    assert status_line.startswith(f"{len(shown)} titles in ")
    assert at_two == api(2)
    assert at_two[0][0] == prediction
    assert linked == shown


@pytest.mark.slow
def test_sigterm_stops_the_server_cleanly(server):
    """Last: it stops the module's server."""
    process, base = server
    assert request(f"{base}/health")[0] == 200
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err[-3000:]
    assert "Stopped by SIGTERM." in out
    assert "Traceback" not in err
