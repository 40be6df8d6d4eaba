"""Titles over HTTP: a JSON API and a page, on Starlette and uvicorn.

- `POST /generate`: `{"text": "..."}` or `{"texts": [...]}` plus decoding
  options (`tasks.lib.decoding_options.FIELD_TYPES`); answers
  `{"results": [{"titles": [{"title", "score"}, ...]}, ...]}`, one result
  per text. A bad request gets a 4xx `{"error", "field"}` naming the field.
- `GET /health`, `GET /info` (the model, defaults, limits, counters),
  `GET /` (a page to paste an abstract into).

Requests that arrive together are decoded together (`Batcher`): the
decoder's cost per step hardly grows with the batch, so under load a
shared batch multiplies throughput.
"""

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import json
import pathlib
import signal
import socket
import time
from typing import Callable

import uvicorn
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.responses import JSONResponse
from starlette.routing import Route

from tasks.lib.decoding_options import DecodingOptions
from tasks.lib.decoding_options import Limits
from tasks.lib.decoding_options import OptionError
from tasks.lib.decoding_options import parse_request

PAGE = pathlib.Path(__file__).with_name("static") / "index.html"
# Texts per decoder call, and how long the first request of a batch waits
# for others: one step of a small model on a CPU takes milliseconds.
MAX_BATCH = 32
WAIT_SECONDS = 0.01
# A body over the limit is read and dropped up to this size (see read_json).
DRAIN_BYTES = 16 << 20


@dataclasses.dataclass(eq=False)  # hashed by identity: a batch's key
class Job:
    texts: list[str]
    options: DecodingOptions
    future: asyncio.Future


class Batcher:
    """Gathers concurrent requests into shared decoder calls.

    The first request of a batch waits up to `wait` seconds for others
    (or until `max_batch` texts); requests with equal options are decoded
    in one call of `decode(texts, options)`, in one worker thread, so the
    event loop keeps answering while the decoder runs, and what arrives
    meanwhile forms the next batch. Seeded sampling is decoded alone: its
    draws depend on the texts decoded beside it.
    """

    def __init__(
        self,
        decode: Callable,
        max_batch: int = MAX_BATCH,
        wait: float = WAIT_SECONDS,
    ):
        self.decode, self.max_batch, self.wait = decode, max_batch, wait
        self.executor = concurrent.futures.ThreadPoolExecutor(
            1, thread_name_prefix="decoder"
        )
        self.queue = self.task = None
        self.counts = {"requests": 0, "texts": 0, "decoder_calls": 0}

    async def start(self):
        self.queue = asyncio.Queue()
        self.task = asyncio.create_task(self.serve())

    async def stop(self):
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)
        self.executor.shutdown(wait=False, cancel_futures=True)

    async def submit(self, texts: list[str], options: DecodingOptions):
        """The titles of `texts`, decoded in some shared batch."""
        future = asyncio.get_running_loop().create_future()
        await self.queue.put(Job(texts, options, future))
        return await future

    async def serve(self):
        while True:
            jobs = await self.gather()
            groups = {}
            for job in jobs:
                groups.setdefault(self.key(job), []).append(job)
            for group in groups.values():
                await self.run(group)

    @staticmethod
    def key(job):
        options = job.options
        return job if options.sample and options.seed is not None else options

    async def gather(self):
        """The next batch: the first job, then whatever arrives within the
        wait window or already waits, up to `max_batch` texts."""
        loop = asyncio.get_running_loop()
        jobs = [await self.queue.get()]
        count = len(jobs[0].texts)
        deadline = loop.time() + self.wait
        while count < self.max_batch:
            remaining = deadline - loop.time()
            try:
                if remaining > 0:
                    job = await asyncio.wait_for(self.queue.get(), remaining)
                else:
                    job = self.queue.get_nowait()
            except (asyncio.TimeoutError, asyncio.QueueEmpty):
                break
            jobs.append(job)
            count += len(job.texts)
        return jobs

    async def run(self, group):
        """Decode a group's texts in one call; hand each job its part."""
        texts = [text for job in group for text in job.texts]
        loop = asyncio.get_running_loop()
        self.counts["requests"] += len(group)
        self.counts["texts"] += len(texts)
        self.counts["decoder_calls"] += 1
        try:
            results = await loop.run_in_executor(
                self.executor, self.decode, texts, group[0].options
            )
        except Exception as error:
            for job in group:
                if not job.future.done():
                    job.future.set_exception(error)
            return
        start = 0
        for job in group:
            part = results[start : start + len(job.texts)]
            start += len(job.texts)
            if not job.future.done():  # the client may have gone
                job.future.set_result(part)


class BodyTooLarge(Exception):
    pass


async def read_json(request: Request, max_bytes: int):
    """The request's JSON body, refused past `max_bytes`.

    A body too large is still read (and dropped) up to `DRAIN_BYTES`, so
    that the client, still sending, gets the 413 answer instead of a
    broken connection; beyond that the connection is cut.
    """
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > DRAIN_BYTES:
        raise BodyTooLarge(f"{declared} bytes: expected at most {max_bytes}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size <= max_bytes:
            chunks.append(chunk)
        elif size > DRAIN_BYTES:
            break
    if size > max_bytes:
        raise BodyTooLarge(f"over {max_bytes} bytes")
    try:
        return json.loads(b"".join(chunks), parse_constant=_no_constant)
    except ValueError as error:
        raise OptionError("body", f"invalid JSON ({error})") from None


def _no_constant(name):
    raise ValueError(f"{name} is not a JSON number")


def error_response(status: int, field: str | None, message: str):
    return JSONResponse({"error": message, "field": field}, status_code=status)


def build_app(
    generator,
    limits: Limits = Limits(),
    max_batch: int = MAX_BATCH,
    wait: float = WAIT_SECONDS,
    on_ready: Callable | None = None,
) -> Starlette:
    """The server of `generator` (a `tasks.lib.generation.Generator`)."""
    batcher = Batcher(generator.generate, max_batch, wait)
    facts = {
        "model": generator.describe(),
        "defaults": dataclasses.asdict(generator.defaults),
        "limits": dataclasses.asdict(limits),
        "batching": {"max_batch": max_batch, "wait_ms": wait * 1000},
    }

    async def generate(request):
        body = await read_json(request, limits.max_body_bytes)
        texts, options = parse_request(
            body,
            generator.defaults,
            limits,
            generator.title_maxlen,
            generator.vocab_size,
        )
        started = time.perf_counter()
        results = await batcher.submit(texts, options)
        return JSONResponse(
            {
                "results": [
                    {"titles": [title.as_json() for title in titles]}
                    for titles in results
                ],
                "options": dataclasses.asdict(options),
                "seconds": round(time.perf_counter() - started, 4),
            }
        )

    async def info(request):
        return JSONResponse({**facts, "counts": dict(batcher.counts)})

    async def health(request):
        return JSONResponse({"status": "ok"})

    async def page(request):
        return HTMLResponse(PAGE.read_text(encoding="utf-8"))

    @contextlib.asynccontextmanager
    async def lifespan(app):
        await batcher.start()
        if on_ready:
            on_ready()
        yield
        await batcher.stop()

    return Starlette(
        routes=[
            Route("/", page),
            Route("/health", health),
            Route("/info", info),
            Route("/generate", generate, methods=["POST"]),
        ],
        exception_handlers=ERROR_HANDLERS,
        lifespan=lifespan,
    )


async def _bad_option(request, error):
    return error_response(400, error.field, str(error))


async def _too_large(request, error):
    return error_response(413, "body", f"body: too large ({error})")


async def _http_error(request, error):
    return error_response(error.status_code, None, error.detail)


async def _server_error(request, error):
    return error_response(500, None, f"{type(error).__name__}: {error}")


ERROR_HANDLERS = {
    OptionError: _bad_option,
    BodyTooLarge: _too_large,
    HTTPException: _http_error,
    Exception: _server_error,
}


def bind(host: str, port: int) -> socket.socket:
    """A socket bound to (host, port); port 0 picks a free one. Errors
    (a port in use, an unknown host) say which address."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM
        )[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        # Listening now, before the model loads and uvicorn starts: a
        # client that connects early waits in the backlog, not refused.
        sock.listen(2048)
    except OSError as error:
        reason = error.strerror or str(error)
        raise OSError(f"--host {host} --port {port}: {reason}") from None
    return sock


def serve(app: Starlette, sock: socket.socket) -> str | None:
    """Serve until SIGTERM or Ctrl-C; returns the signal's name.

    uvicorn shuts down gracefully on either, then raises the signal again
    for the handler that was there before it: a no-op one here, so the
    process ends normally (exit status 0) instead of being killed.
    """
    stopped = []
    for number in (signal.SIGINT, signal.SIGTERM):
        signal.signal(number, lambda sig, _: stopped.append(sig))
    config = uvicorn.Config(
        app, log_level="warning", timeout_graceful_shutdown=10
    )
    uvicorn.Server(config).run(sockets=[sock])
    return signal.Signals(stopped[0]).name if stopped else None
