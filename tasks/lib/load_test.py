"""A load test of the title server against one-at-a-time decoding.

`tasks/serve_benchmark.py` runs it: a small random model directory, the
same single-abstract requests decoded one at a time in this process, then
sent by many concurrent clients to `tasks/serve.py` on a free port of
127.0.0.1 (nothing else is contacted). Every loop is bounded in count and
in time.
"""

import dataclasses
import http.client
import json
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import threading
import time

import numpy as np

# Where the scripts are: the server runs as `python tasks/serve.py`.
TASKS = pathlib.Path(__file__).resolve().parents[1]


@dataclasses.dataclass
class Measured:
    """What one way of answering the requests did."""

    label: str
    latencies: list[float]
    seconds: float
    titles: dict[int, str]  # index of the request's text -> first title
    texts_per_call: float | None = None

    @property
    def per_second(self) -> float:
        return len(self.latencies) / self.seconds

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.latencies, q)) * 1000


def random_model_dir(
    directory, shape: dict, max_positions: int, vocab=None, seed=0
):
    """A random UniLM model of `shape` (layers, hidden, heads,
    intermediate) over `vocab` (a vocab.txt; default: the synthetic
    data's), saved as a model directory: config.json, vocab.txt,
    model.safetensors."""
    import keras

    from data import load_vocab
    from data import synthetic
    from models import build_transformer_model
    from weights.formats import save_safetensors

    directory = pathlib.Path(directory)
    if vocab is None:
        vocab = synthetic.write_vocab(directory / "vocab.txt")
    else:
        vocab = shutil.copy(vocab, directory / "vocab.txt")
    keras.utils.set_random_seed(seed)
    model = build_transformer_model(
        None,
        application="unilm",
        vocab_size=len(load_vocab(str(vocab))),
        num_hidden_layers=shape["layers"],
        hidden_size=shape["hidden"],
        num_attention_heads=shape["heads"],
        intermediate_size=shape["intermediate"],
        max_position_embeddings=max_positions,
    )
    model.bert_config.save(directory / "config.json")
    save_safetensors(model, directory / "model.safetensors")
    return directory


def one_at_a_time(generator, texts, options, seconds) -> Measured:
    """Each text decoded alone, in this process, for at most `seconds`
    (after a warm-up that compiles the decoder's shapes)."""
    generator.generate(texts[:2], options, batch_size=1)
    latencies, titles = [], {}
    started = time.perf_counter()
    for index, text in enumerate(texts):
        begun = time.perf_counter()
        (answer,) = generator.generate([text], options, batch_size=1)
        latencies.append(time.perf_counter() - begun)
        titles[index] = answer[0].text
        if time.perf_counter() - started > seconds:
            break
    elapsed = time.perf_counter() - started
    return Measured("in-process, one at a time", latencies, elapsed, titles)


class Server:
    """`tasks/serve.py MODEL_DIR` on a free port of 127.0.0.1."""

    def __init__(self, model_dir, arguments=(), timeout=600):
        command = [
            sys.executable,
            str(TASKS / "serve.py"),
            str(model_dir),
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            *arguments,
        ]
        self.process = subprocess.Popen(
            command, stdout=subprocess.PIPE, text=True, env={**os.environ}
        )
        line = self.process.stdout.readline()
        match = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
        if not match:
            self.process.kill()
            raise RuntimeError(f"the server did not start: {line!r}")
        self.port = int(match.group(1))

    def get(self, path):
        connection = http.client.HTTPConnection("127.0.0.1", self.port, 60)
        try:
            connection.request("GET", path)
            return json.loads(connection.getresponse().read())
        finally:
            connection.close()

    def stop(self):
        """SIGTERM, as a service manager stops it; its exit status."""
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()


def load(server, texts, clients, options: dict, seconds) -> Measured:
    """`clients` threads, each with its own keep-alive connection, send
    their share of `texts` (one per request) as fast as answers come,
    starting together and stopping after `seconds`. Titles come back in
    the order of `texts` (those answered)."""
    answered = {}  # index in texts -> (latency, title)
    failures = []
    start = threading.Barrier(clients + 1)
    deadline = []

    def client(first):
        connection = http.client.HTTPConnection("127.0.0.1", server.port, 600)
        start.wait()
        try:
            for index in range(first, len(texts), clients):
                if time.perf_counter() > deadline[0]:
                    break
                begun = time.perf_counter()
                title = ask(connection, texts[index], options)
                answered[index] = (time.perf_counter() - begun, title)
        except Exception as error:  # reported after the threads end
            failures.append(error)
        finally:
            connection.close()

    threads = [
        threading.Thread(target=client, args=(i,)) for i in range(clients)
    ]
    for thread in threads:
        thread.start()
    before = server.get("/info")["counts"]
    deadline.append(time.perf_counter() + seconds)
    started = time.perf_counter()
    start.wait()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    after = server.get("/info")["counts"]
    if failures:
        raise RuntimeError(f"{len(failures)} clients failed: {failures[0]}")
    calls = after["decoder_calls"] - before["decoder_calls"]
    order = sorted(answered)
    return Measured(
        f"server, {clients} concurrent clients",
        [answered[index][0] for index in order],
        elapsed,
        {index: answered[index][1] for index in order},
        (after["texts"] - before["texts"]) / max(calls, 1),
    )


def ask(connection, text, options):
    """POST one abstract; its first title."""
    body = json.dumps({"text": text, **options}, ensure_ascii=False)
    connection.request("POST", "/generate", body.encode("utf-8"))
    response = connection.getresponse()
    answer = json.loads(response.read())
    if response.status != 200:
        raise RuntimeError(f"{response.status}: {answer}")
    return answer["results"][0]["titles"][0]["title"]


@dataclasses.dataclass
class Round:
    """One round: the same requests one at a time, then served."""

    alone: Measured
    served: Measured

    @property
    def speed_up(self) -> float:
        return self.served.per_second / self.alone.per_second

    def same_titles(self) -> tuple[int, int]:
        """(titles equal both ways, requests answered both ways)."""
        common = set(self.served.titles) & set(self.alone.titles)
        same = sum(
            self.served.titles[i] == self.alone.titles[i] for i in common
        )
        return same, len(common)


def compare(
    model_dir, texts, clients, beams, seconds, lengths, serving=(), rounds=3
):
    """`rounds` rounds on one model directory, each decoding `texts` one
    at a time in this process (the server idle), then sending them to the
    server from `clients` concurrent clients (this process idle but for
    the clients): alternating, so that a change in the machine's load
    falls on both. Returns (generator, rounds, the server's exit status
    after SIGTERM)."""
    from tasks.lib.decoding_options import DecodingOptions
    from tasks.lib.generation import load_model_dir

    generator = load_model_dir(model_dir, *lengths)
    options = DecodingOptions(beams=beams)
    arguments = ["--maxlen", str(lengths[0]), "--title-maxlen", str(lengths[1])]
    server = Server(model_dir, [*arguments, *serving])
    request = {"beams": beams}
    measured = []
    try:
        # Unmeasured: compiles the shapes of the batches to come.
        load(server, texts[: 4 * clients], clients, request, 600)
        for _ in range(rounds):
            alone = one_at_a_time(generator, texts, options, seconds)
            served = load(server, texts, clients, request, seconds)
            measured.append(Round(alone, served))
    finally:
        status = server.stop()
    return generator, measured, status


def pooled(rounds: list[Round]) -> list[Measured]:
    """Served and one-at-a-time figures over all rounds."""
    rows = []
    for phase in ("served", "alone"):
        parts = [getattr(one, phase) for one in rounds]
        per_call = [p.texts_per_call for p in parts if p.texts_per_call]
        rows.append(
            Measured(
                parts[0].label,
                [latency for p in parts for latency in p.latencies],
                sum(p.seconds for p in parts),
                {},
                float(np.mean(per_call)) if per_call else None,
            )
        )
    return rows


def table(rows: list[Measured]) -> str:
    """The Markdown table of the benchmark."""
    lines = [
        "| mode | requests | seconds | requests/s | p50 ms | p99 ms | "
        "texts per decoder call |",
        "|:---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        per_call = "1" if row.texts_per_call is None else row.texts_per_call
        per_call = per_call if isinstance(per_call, str) else f"{per_call:.1f}"
        lines.append(
            f"| {row.label} | {len(row.latencies)} | {row.seconds:.1f} | "
            f"{row.per_second:.1f} | {row.percentile(50):.0f} | "
            f"{row.percentile(99):.0f} | {per_call} |"
        )
    return "\n".join(lines)
