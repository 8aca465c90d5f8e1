"""An interactive demo page: a refinement session in the browser (`fastclipseg demo`).

`serve(segmenter)` runs the app of `fastclipseg.demo.app` with uvicorn on this machine's
loopback address; it needs the `demo` extra (`pip install "fastclipseg[demo]"`: FastAPI and
uvicorn).
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path

import uvicorn

from ..ops.validation import DEFAULT_MAX_PIXELS
from .app import create_app

LOOPBACK_NAMES = {"127.0.0.1", "localhost", "::1"}


def listen(host: str = "127.0.0.1", port: int = 8000) -> socket.socket:
    """A listening socket on `host`:`port` (port 0: a free one, which `socket.getsockname` tells).
    Made before the model loads, so that a port in use fails at once."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return socket.create_server((host, port), family=family)


def url_of(listener: socket.socket) -> str:
    host, port = listener.getsockname()[:2]
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


def serve(segmenter: object, *, host: str = "127.0.0.1", port: int = 8000, listener: socket.socket | None = None,
          images_dir: str | Path | None = None, max_upload_bytes: int = 20 * 2**20,
          max_pixels: int = DEFAULT_MAX_PIXELS, threshold: float = 0.5,
          announce: Callable[[str], None] | None = None) -> None:
    """Serve the demo for `segmenter` until interrupted (Ctrl-C). `listener` is a socket from
    `listen` (else one is opened on `host`:`port`); `announce` gets the line with the page's URL."""
    listener = listener or listen(host, port)
    bound = listener.getsockname()[0]
    # On the loopback address only this machine's names are answered (DNS rebinding sends others).
    loopback = bound in LOOPBACK_NAMES or bound.startswith("127.")
    app = create_app(segmenter, max_upload_bytes=max_upload_bytes, max_pixels=max_pixels, images_dir=images_dir,
                     threshold=threshold, allowed_hosts=LOOPBACK_NAMES | {bound} if loopback else None)
    line = f"fastclipseg demo: {url_of(listener)} (Ctrl-C stops it)"
    if announce is None:
        print(line, flush=True)  # flushed: a parent process may be waiting for this line on a pipe
    else:
        announce(line)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    server.run(sockets=[listener])
