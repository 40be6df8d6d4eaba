"""bert4keras's `WebServing` on Starlette and uvicorn.

bert4keras wrapped a function as a web endpoint with bottle (and a
TensorFlow 1 session); the same calls work here:

    web = WebServing(port=8864)
    web.route("/gen_synonyms", gen_synonyms, {"text": (None, True)})
    web.start()
    # http://127.0.0.1:8864/gen_synonyms?text=你好

Each argument is `(convert, required)`: the query (GET) or URL-encoded
form (POST) value, converted by `convert` unless None. The answer is
bert4keras's JSON, `{"code": 0, "desc": "succeeded", "data":
func(**kwargs)}`, with code 1 for a missing required argument and code 2
for an error in `func` (here also in `convert`, which bottle answered with
a bare 500). `func` runs in
a worker thread. `server` is accepted and ignored: uvicorn serves.
tasks/serve.py is the toolkit's own title server.
"""

import json
import urllib.parse
from typing import Callable

import uvicorn
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response
from starlette.routing import Route


class WebServing:
    """bert4keras 0.11's `WebServing(host, port, server)`: `route`,
    `wraps`, `start`; `app` is the Starlette application."""

    def __init__(self, host="0.0.0.0", port=8000, server="paste"):
        self.host, self.port, self.server = host, port, server
        self.app = Starlette()

    def wraps(self, func: Callable, arguments: dict, method="GET"):
        """An endpoint calling `func` with the request's `arguments`."""

        async def endpoint(request):
            if method == "GET":
                values = request.query_params
            else:
                body = (await request.body()).decode("utf-8", "replace")
                values = dict(urllib.parse.parse_qsl(body))
            outputs = {"code": 0, "desc": "succeeded", "data": {}}
            raw = {}
            for key, (_, required) in arguments.items():
                value = values.get(key)
                if value is not None:
                    raw[key] = value
                elif required:
                    outputs["code"] = 1
                    outputs["desc"] = f'lack of "{key}" argument'
                    return _json(outputs)
            try:
                kwargs = {
                    key: _convert(arguments[key][0], value)
                    for key, value in raw.items()
                }
                outputs["data"] = await run_in_threadpool(func, **kwargs)
            except Exception as error:
                outputs["code"] = 2
                outputs["desc"] = str(error)
            return _json(outputs)

        return endpoint

    def route(self, path: str, func: Callable, arguments: dict, method="GET"):
        """Serve `func` at `path`."""
        endpoint = self.wraps(func, arguments, method)
        self.app.router.routes.append(Route(path, endpoint, methods=[method]))

    def start(self):
        """Serve until Ctrl-C or SIGTERM."""
        uvicorn.run(self.app, host=self.host, port=self.port)


def _convert(convert, value):
    return value if convert is None else convert(value)


def _json(outputs):
    return Response(
        json.dumps(outputs, ensure_ascii=False), media_type="application/json"
    )
