"""compat.snippets.WebServing: bert4keras's web helper, served for real.

bert4keras's own class needs bottle and a TensorFlow 1 session, so it
cannot run here as a reference; its answers are written out from its
source (`snippets.py`, `WebServing.wraps`): code 0 with the function's
data, code 1 naming a missing required argument, code 2 with an error's
message.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.parse
import urllib.request

import pytest

from compat import snippets
from tests.common import ROOT
from tests.common import running


def get(url, data=None):
    body = None if data is None else urllib.parse.urlencode(data).encode()
    with urllib.request.urlopen(url, data=body, timeout=30) as response:
        assert response.headers["content-type"] == "application/json"
        return json.loads(response.read().decode("utf-8"))


def synonyms(text, n=2):
    return [text] * n


def failing(text):
    raise ValueError(f"cannot use {text}")


@pytest.fixture(scope="module")
def web():
    web = snippets.WebServing(host="127.0.0.1", port=0)
    arguments = {"text": (None, True), "n": (int, False)}
    web.route("/gen_synonyms", synonyms, arguments)
    web.route("/post", synonyms, arguments, method="POST")
    web.route("/fail", failing, {"text": (None, True)})
    with running(web.app) as base:
        yield base


def test_a_route_answers_with_the_functions_data(web):
    answer = get(f"{web}/gen_synonyms?text=" + urllib.parse.quote("你好"))
    assert answer == {"code": 0, "desc": "succeeded", "data": ["你好"] * 2}


def test_arguments_are_converted(web):
    answer = get(f"{web}/gen_synonyms?text=a&n=3")
    assert answer["data"] == ["a", "a", "a"]


def test_post_reads_form_fields(web):
    answer = get(f"{web}/post", {"text": "表单", "n": "1"})
    assert answer == {"code": 0, "desc": "succeeded", "data": ["表单"]}


def test_a_missing_required_argument_is_code_1(web):
    answer = get(f"{web}/gen_synonyms?n=3")
    assert answer == {
        "code": 1,
        "desc": 'lack of "text" argument',
        "data": {},
    }


def test_an_error_is_code_2_with_its_message(web):
    assert get(f"{web}/fail?text=x") == {
        "code": 2,
        "desc": "cannot use x",
        "data": {},
    }
    answer = get(f"{web}/gen_synonyms?text=a&n=many")
    assert answer["code"] == 2
    assert "invalid literal for int()" in answer["desc"]
    # The server still serves.
    assert get(f"{web}/gen_synonyms?text=b")["data"] == ["b", "b"]


SCRIPT = """
from compat.snippets import WebServing

def gen_synonyms(text, n=2):
    return [text] * n

web = WebServing(host="127.0.0.1", port={port})
web.route("/gen_synonyms", gen_synonyms, {{"text": (None, True)}})
web.start()
"""


@pytest.mark.slow
def test_a_ported_script_starts_serving_and_stops_on_sigterm(tmp_path):
    """bert4keras's usage, unchanged: `start()` serves until SIGTERM."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    script = tmp_path / "serving.py"
    script.write_text(textwrap.dedent(SCRIPT.format(port=port)))
    process = subprocess.Popen(
        [sys.executable, str(script)],
        cwd=ROOT,
        env={**os.environ},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        url = f"http://127.0.0.1:{port}/gen_synonyms?text=hi"
        deadline = time.monotonic() + 120
        while True:
            try:
                answer = get(url)
                break
            except OSError:
                assert process.poll() is None, process.stdout.read()
                assert time.monotonic() < deadline
                time.sleep(0.2)
        assert answer["data"] == ["hi", "hi"]
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    # uvicorn shuts down, then lets SIGTERM end the process as it would
    # have without it.
    assert process.returncode in (0, -signal.SIGTERM)
    assert "Shutting down" in process.stdout.read()
