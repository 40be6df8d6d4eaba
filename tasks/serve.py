"""Serve titles over HTTP: a JSON API and a page, for a run or model dir.

    POST /generate   {"text": "..."} or {"texts": [...]}, with any of
                     beams, nbest, sample, n, topk, topp, seed,
                     length_penalty, min_length (as tasks/generate.py)
    GET  /health     {"status": "ok"}
    GET  /info       the model, default options, limits, counters
    GET  /           a page: paste an abstract, see the n-best titles

Requests arriving together are decoded in shared batches (the first waits
--wait-ms for others, up to --max-batch texts), in one worker thread, so
the server keeps answering while it decodes. A bad request gets a 4xx JSON
error naming the field. SIGTERM or Ctrl-C stops it cleanly.

Usage:
    python tasks/serve.py runs/csl_title-baseline-seed0 --port 8000
    curl -s localhost:8000/generate -d '{"text": "摘要……", "beams": 3}'
"""

import sys

from tasks.lib.cli import ArgumentParser
from tasks.lib.cli import HelpFormatter
from tasks.lib.cli import add_verbose
from tasks.lib.cli import check_at_least
from tasks.lib.cli import run_main
from tasks.lib.decoding_options import Limits
from tasks.lib.decoding_options import add_model_arguments
from tasks.lib.decoding_options import check_model_arguments

LIMITS = Limits()
LIMIT_HELP = {
    "max_beams": "largest beam size a request may ask for",
    "max_samples": "most sampled titles per text",
    "max_texts": "most texts per request",
    "max_chars": "longest text, in characters",
}


def build_parser():
    parser = ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    add = parser.add_argument
    add_model_arguments(parser)
    add("--port", type=int, default=8000, help="port (0: any free one)")
    add(
        "--host",
        default="127.0.0.1",
        help="address to listen on (0.0.0.0: every interface)",
    )
    group = parser.add_argument_group("batching and limits")
    group.add_argument(
        "--max-batch", type=int, default=32, help="texts per decoder call"
    )
    group.add_argument(
        "--wait-ms",
        type=float,
        default=10.0,
        help="how long a request waits for others to share its batch",
    )
    for field, help in LIMIT_HELP.items():
        group.add_argument(
            f"--{field.replace('_', '-')}",
            type=int,
            default=getattr(LIMITS, field),
            help=help,
        )
    add_verbose(parser)
    return parser


def run(args):
    check_model_arguments(args)
    limits = Limits(*(getattr(args, field) for field in LIMIT_HELP))
    check_at_least(
        {
            "--port": (args.port, 0),
            "--max-batch": (args.max_batch, 1),
            "--wait-ms": (args.wait_ms, 0),
            **{
                f"--{field.replace('_', '-')}": (getattr(limits, field), 1)
                for field in LIMIT_HELP
            },
        }
    )
    # Keras, the backend and the web server load here, not at the top:
    # --help and argument errors answer at once.
    from tasks.lib.generation import load_generator
    from tasks.lib.serving import bind
    from tasks.lib.serving import build_app
    from tasks.lib.serving import serve

    sock = bind(args.host, args.port)
    generator = load_generator(args.model, args.maxlen, args.title_maxlen)
    generator.generate(["warm-up"], generator.defaults)  # compile once
    host, port = sock.getsockname()[:2]
    url = f"http://{f'[{host}]' if ':' in host else host}:{port}/"

    def ready():
        print(f"Serving {args.model} on {url} (Ctrl-C to stop)", flush=True)

    app = build_app(
        generator, limits, args.max_batch, args.wait_ms / 1000, ready
    )
    stopped = serve(app, sock)
    print(f"Stopped{f' by {stopped}' if stopped else ''}.", flush=True)


def main(argv=None):
    run_main(run, build_parser().parse_args(argv), prog="serve.py")
    return 0


if __name__ == "__main__":
    sys.exit(main())
