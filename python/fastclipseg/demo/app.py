"""The demo's web app: one static page and a small JSON API over `fastclipseg.Session`s.

Why FastAPI and a page of our own rather than Gradio: Gradio pulls in about 100 MB of
dependencies and generates a DOM that changes between its releases, which a browser test cannot
hold on to; our page is three static files (no build step, nothing from a CDN: the demo works
offline) with stable element ids, and the server enforces our own limits on uploads.

The API (an error is JSON `{"detail": message}` with a 4xx status, never a traceback):

    GET  /                                  the page (static/index.html; /static/ has its JS and CSS)
    GET  /api/config                        the limits, and the image names of the --images folder
    POST /api/sessions?name=FILE            body: an image file's raw bytes -> a new session's state
    POST /api/sessions?example=NAME         an image of the --images folder -> a new session's state
    GET  /api/sessions/{token}              the session's state
    POST /api/sessions/{token}/segment      {"prompts": [texts or expressions]}: the new current result
    POST /api/sessions/{token}/refine       {"phrase": "exclude the collar"}: refine the current mask
    POST /api/sessions/{token}/undo, reset
    GET  /api/sessions/{token}/overlay.png, heatmap.png, masks.zip, result.json, coco.json[?image_id=N]

Uploads are the raw request body (so python-multipart is not needed), read up to
`max_upload_bytes` (413 past it) and decoded by Pillow from memory, with the package's pixel
limit checked from the header first. Nothing is ever written to disk: images, sessions,
pictures and downloads live in memory only.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from urllib.parse import urlsplit

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from ..ops.validation import DEFAULT_MAX_PIXELS, decode_image_bytes, load_image
from ..session import Session
from ..streams.sources import collect_image_paths
from ..streams.writers import slug
from . import downloads
from .store import SessionStore, Snapshot, UnknownSession

STATIC = Path(__file__).parent / "static"
MAX_PROMPTS = 10
MAX_PROMPT_CHARS = 1000
# Listing a huge --images folder in a <select> helps nobody.
MAX_LISTED_IMAGES = 1000
# Everything from this server only: a page that loads nothing from elsewhere, and no framing.
CONTENT_SECURITY_POLICY = ("default-src 'self'; img-src 'self' blob: data:; object-src 'none'; base-uri 'none'; "
                           "frame-ancestors 'none'; form-action 'none'")


class SegmentRequest(BaseModel):
    prompts: list[str]


class RefineRequest(BaseModel):
    phrase: str


def create_app(segmenter: object, *, max_upload_bytes: int = 20 * 2**20, max_pixels: int = DEFAULT_MAX_PIXELS,
               images_dir: str | Path | None = None, threshold: float = 0.5, max_sessions: int = 8,
               allowed_hosts: set[str] | None = None) -> FastAPI:
    """The demo app over `segmenter` (a `FastSegmenter` or `InferenceCore`).

    `max_upload_bytes` and `max_pixels` limit uploads; `images_dir` is a folder whose images the
    page offers besides uploads; `max_sessions` browser tabs are kept (least recently used
    dropped); `allowed_hosts`, when given, are the only Host headers answered (a server on the
    loopback address refuses other names, which is what DNS rebinding would send).
    """
    store = SessionStore(segmenter, capacity=max_sessions, threshold=threshold)
    folder = Path(images_dir) if images_dir is not None else None
    app = FastAPI(title="fastclipseg demo", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.store = store

    @app.middleware("http")
    async def guard(request: Request, call_next):
        if allowed_hosts is not None and urlsplit("//" + request.headers.get("host", "")).hostname not in allowed_hosts:
            return JSONResponse({"detail": "unknown Host header: open the demo at the address it printed"}, 400)
        response = await call_next(request)
        response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        if request.url.path.startswith("/api/"):
            response.headers["Cache-Control"] = "no-store"
        return response

    @app.exception_handler(UnknownSession)
    async def unknown_session(request: Request, error: UnknownSession) -> JSONResponse:
        return JSONResponse({"detail": str(error)}, 404)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, error: Exception) -> JSONResponse:
        # The traceback goes to the server's log; the page gets one line.
        return JSONResponse({"detail": f"internal error ({type(error).__name__}: {error})"}, 500)

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    @app.get("/api/config")
    def config() -> dict:
        return {"max_upload_bytes": max_upload_bytes, "max_pixels": max_pixels, "max_prompts": MAX_PROMPTS,
                "images": list_images(folder)}

    @app.post("/api/sessions")
    async def open_session(request: Request, name: str = "image", example: str | None = None) -> dict:
        if example is not None:
            if example not in list_images(folder):
                raise HTTPException(404, f"no image {example!r} in the demo's image folder")
            name, load = example, partial(load_image, folder / example, max_pixels)
        else:
            name = Path(name).name[:200] or "image"
            load = partial(decode_image_bytes, await read_body(request, max_upload_bytes), max_pixels, name)
        with bad_request():
            image = await run_in_threadpool(load)
            return state(await run_in_threadpool(store.open, image, name))

    @app.get("/api/sessions/{token}")
    def get_session(token: str) -> dict:
        return state(store.snapshot(token))

    @app.post("/api/sessions/{token}/segment")
    def segment(token: str, body: SegmentRequest) -> dict:
        prompts = checked_prompts(body.prompts)
        with bad_request():
            return state(store.change(token, partial(segment_prompts, prompts=prompts)))

    @app.post("/api/sessions/{token}/refine")
    def refine(token: str, body: RefineRequest) -> dict:
        if len(body.phrase) > MAX_PROMPT_CHARS:
            raise HTTPException(400, f"the phrase has {len(body.phrase)} characters; the demo takes {MAX_PROMPT_CHARS}")
        with bad_request():
            return state(store.change(token, partial(refine_current, phrase=body.phrase)))

    @app.post("/api/sessions/{token}/undo")
    def undo(token: str) -> dict:
        with bad_request():
            return state(store.change(token, Session.undo))

    @app.post("/api/sessions/{token}/reset")
    def reset(token: str) -> dict:
        return state(store.change(token, Session.reset))

    @app.get("/api/sessions/{token}/overlay.png")
    def overlay(token: str) -> Response:
        snapshot = store.snapshot(token)
        return Response(downloads.overlay_png(snapshot.image, snapshot.current), media_type="image/png")

    @app.get("/api/sessions/{token}/heatmap.png")
    def heatmap(token: str) -> Response:
        snapshot = with_result(store.snapshot(token))
        return Response(downloads.heatmap_png(snapshot.image, snapshot.current), media_type="image/png")

    @app.get("/api/sessions/{token}/masks.zip")
    def masks(token: str) -> Response:
        snapshot = with_result(store.snapshot(token))
        stem = file_stem(snapshot.name)
        return attachment(downloads.masks_zip(snapshot.current, stem), f"{stem}_masks.zip", "application/zip")

    @app.get("/api/sessions/{token}/result.json")
    def result_json(token: str) -> Response:
        snapshot = with_result(store.snapshot(token))
        return attachment(downloads.result_json(snapshot.current, snapshot.name), f"{file_stem(snapshot.name)}.json",
                          "application/json")

    @app.get("/api/sessions/{token}/coco.json")
    def coco_json(token: str, image_id: int = 1) -> Response:
        snapshot = with_result(store.snapshot(token))
        return attachment(downloads.coco_json(snapshot.current, image_id), f"{file_stem(snapshot.name)}_coco.json",
                          "application/json")

    return app


# -- what the routes share ----------------------------------------------------------------------


@contextmanager
def bad_request() -> Iterator[None]:
    """A bad input (image, prompt, expression, phrase; `ValueError`/`TypeError` with a message
    naming it, an unreadable --images file) is a 400 with that message."""
    try:
        yield
    except (ValueError, TypeError, OSError) as error:
        message = str(error).replace("raise max_image_pixels", "start the demo with a larger --max-pixels")
        raise HTTPException(400, message) from error


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, or a 413 as soon as it is known to be over `limit` bytes (from the
    declared length, else while reading: a client may not declare it)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise HTTPException(413, too_large(limit))
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise HTTPException(413, too_large(limit))
    return bytes(body)


def too_large(limit: int) -> str:
    size = f"{limit / 2**20:g} MB" if limit >= 2**20 else f"{limit} bytes"
    return f"the file is larger than this demo's upload limit of {size} (start it with a larger --max-upload-mb)"


def checked_prompts(prompts: list[str]) -> list[str]:
    """The request's prompts within the demo's limits (each is then checked as any prompt is)."""
    if not prompts:
        raise HTTPException(400, "no prompt: type one (several: one per line)")
    if len(prompts) > MAX_PROMPTS:
        raise HTTPException(400, f"{len(prompts)} prompts; the demo takes at most {MAX_PROMPTS} at once")
    for prompt in prompts:
        if len(prompt) > MAX_PROMPT_CHARS:
            raise HTTPException(400, f"a prompt has {len(prompt)} characters; the demo takes {MAX_PROMPT_CHARS}")
    return prompts


def segment_prompts(session: Session, prompts: list[str]) -> None:
    """One prompt: `Session.segment`. Several: one result with a mask each, which enters the
    history as `segment`'s result does (so undo and reset treat it alike)."""
    if len(prompts) == 1:
        session.segment(prompts[0])
    else:
        session.history.append(session.predict(prompts))


def refine_current(session: Session, phrase: str) -> None:
    """`Session.refine`, which combines one mask with the new prompt: refused on a result of several."""
    current = session.current
    if current is not None and len(current.prompts) > 1:
        raise ValueError(f"refine works on one mask, and the current result has {len(current.prompts)} (one per "
                         "prompt): segment a single prompt first")
    session.refine(phrase)


def with_result(snapshot: Snapshot) -> Snapshot:
    if snapshot.current is None:
        raise HTTPException(409, "no result yet: segment a prompt first")
    return snapshot


def list_images(folder: Path | None) -> list[str]:
    """The images in `folder` (recursively, sorted) by their path relative to it, at most
    `MAX_LISTED_IMAGES`; the only names `?example=` accepts (so no path leaves the folder)."""
    if folder is None:
        return []
    paths = collect_image_paths([folder]).images[:MAX_LISTED_IMAGES]
    return [Path(path).relative_to(folder).as_posix() for path in paths]


def file_stem(name: str) -> str:
    return slug(Path(name).stem, limit=60) if name else "image"


def attachment(data: bytes, filename: str, media_type: str) -> Response:
    return Response(data, media_type=media_type, headers={"Content-Disposition": f'attachment; filename="{filename}"'})


def state(snapshot: Snapshot) -> dict:
    """What the page shows: the image, the history's labels, the current result's legend, and the
    URLs of its pictures and downloads (with the version, so that each change loads anew)."""
    base = f"/api/sessions/{snapshot.token}"
    height, width = snapshot.image.shape[:2]
    version = f"?v={snapshot.version}"
    links = {"overlay": f"{base}/overlay.png{version}"}
    current = None
    if snapshot.current is not None:
        current = {"threshold": snapshot.current.threshold, "masks": downloads.legend(snapshot.current)}
        links.update(heatmap=f"{base}/heatmap.png{version}", masks=f"{base}/masks.zip{version}",
                     json=f"{base}/result.json{version}", coco=f"{base}/coco.json{version}")
    return {"session": snapshot.token, "name": snapshot.name, "width": width, "height": height,
            "version": snapshot.version, "history": list(snapshot.history), "current": current, "links": links}
