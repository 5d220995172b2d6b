"""The prediction service, ``alexnet serve``: one :class:`~alexnet.inference.predict.Predictor` behind HTTP.

* ``POST /predict[?top=K]``: an image in (multipart/form-data with a ``file`` field, as the page
  sends it, or the image itself with ``Content-Type: image/*``), its top-K classes out as JSON.
* ``GET /health``: the model it serves; ``GET /metrics``: requests and latency, Prometheus text
  (:mod:`alexnet.inference.servemetrics`);
  ``GET /``: a page where a person drops or picks an image and sees its top-5 as bars.

Uploads come from strangers. The body is counted as it arrives and refused past ``max_bytes``
(413) before it is all read; the bytes are decoded by :func:`alexnet.data.images.decode_image`,
the twin of the decoder every image file goes through, so the same formats, pixel budget and
checks from the header hold. Every refusal is a 4xx with one line of JSON, ``{"error": ...}``.

At most :data:`DECODERS` uploads are decoded at once, which bounds the memory that decoding takes.
Requests that arrive together share a forward pass (:class:`Batcher`): the network's fully
connected layers are read once per batch instead of once per image.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import socket
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import anyio
import anyio.to_thread
import torch
from starlette.applications import Starlette
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import ClientDisconnect, Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from alexnet.data.images import decode_image
from alexnet.errors import ConfigError, ImageError, ImageFormatError, ImageSizeError, first_line
from alexnet.inference.predict import Predictor
from alexnet.inference.servemetrics import CONTENT_TYPE, Metrics, MetricsMiddleware
from alexnet.system.runtime import parse_device

DEFAULT_MAX_BYTES = 20_000_000  # a 20 MB body: the largest phone photos are 10-15 MB as JPEG
# Images decoded at once. The decoder lets one image take up to 1.92 GB while it is decoded and
# converted (alexnet.data.images.MAX_DECODE_BYTES), so many large uploads at once could take all the
# memory; two keep both cores busy and bound the peak at 3.84 GB. Requests past them wait their turn.
DECODERS = 2
# The page loads nothing from elsewhere, and a class name is only ever shown as text.
PAGE_POLICY = (
    "default-src 'none'; img-src blob:; style-src 'unsafe-inline'; script-src 'unsafe-inline'; connect-src 'self'"
)


@dataclass(frozen=True)
class ServeSettings:
    """What ``alexnet serve`` is told; the flags are these fields."""

    checkpoint: str
    host: str = "127.0.0.1"  # loopback: reachable from this machine only
    port: int = 8000  # 0: any free port (the one taken is printed)
    max_bytes: int = DEFAULT_MAX_BYTES  # largest request body accepted
    max_batch: int = 8  # images per forward pass; 1 turns batching off
    batch_wait_ms: float = 0.0  # how long a forward pass waits for more requests to join it
    device: str = "auto"  # as alexnet evaluate: CUDA, else MPS, else the CPU

    def __post_init__(self):
        for name, low in (("port", 0), ("max_bytes", 1), ("max_batch", 1)):
            if getattr(self, name) < low:
                raise ConfigError(f"--{name.replace('_', '-')} must be at least {low}, got {getattr(self, name)}")
        if self.port > 65535:
            raise ConfigError(f"--port must be at most 65535, got {self.port}")
        if not 0 <= self.batch_wait_ms <= 1000:
            raise ConfigError(f"--batch-wait-ms must be between 0 and 1000, got {self.batch_wait_ms}")
        parse_device(self.device)


class RequestError(Exception):
    """A request the service refuses: an HTTP status and a one-line message."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


# --------------------------------------------------------------------------------------------
# Batching


class Batcher:
    """Runs the network on model inputs that requests hand in, one forward pass at a time, on
    one worker thread (torch's own threads already use every core for one pass).

    A pass takes every input waiting, up to ``max_batch``, and waits up to ``wait_s`` for more
    when fewer are waiting: under load the requests that arrive during one pass share the next.
    A batched pass gives each image the probabilities a pass of its own gives, to float rounding.
    """

    def __init__(self, predictor: Predictor, metrics: Metrics, *, max_batch: int, wait_s: float):
        self.predictor, self.metrics, self.max_batch, self.wait_s = predictor, metrics, max_batch, wait_s
        self._queue: asyncio.Queue = asyncio.Queue()
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="alexnet-forward")
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._worker.shutdown(wait=True)

    async def probabilities(self, x: torch.Tensor) -> torch.Tensor:
        """The softmax probabilities (classes,) of one model input (C, S, S)."""
        future = asyncio.get_running_loop().create_future()
        await self._queue.put((x, future))
        return await future

    async def _gather(self) -> list:
        loop = asyncio.get_running_loop()
        batch = [await self._queue.get()]
        deadline = loop.time() + self.wait_s
        while len(batch) < self.max_batch:
            if not self._queue.empty():
                batch.append(self._queue.get_nowait())
                continue
            left = deadline - loop.time()
            if left <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self._queue.get(), left))
            except asyncio.TimeoutError:
                break
        return [(x, f) for x, f in batch if not f.done()]  # a request cancelled meanwhile needs no answer

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._gather()
            if not batch:
                continue
            try:
                probs = await loop.run_in_executor(self._worker, self._forward, [x for x, _ in batch])
            except Exception as e:  # every request of the pass gets the error (a 500)
                for _, f in batch:
                    f.done() or f.set_exception(e)
                continue
            for (_, f), p in zip(batch, probs):
                f.done() or f.set_result(p)

    def _forward(self, inputs: list[torch.Tensor]) -> torch.Tensor:
        probs = self.predictor.probabilities([torch.stack(inputs)]).cpu()  # (N, C, S, S) -> (N, classes)
        self.metrics.batches += 1
        self.metrics.images += len(inputs)
        return probs


# --------------------------------------------------------------------------------------------
# The application


def build_app(predictor: Predictor, settings: ServeSettings) -> Starlette:
    """The ASGI application serving ``predictor`` (its batcher starts and stops with it)."""
    metrics = Metrics()
    page = resources.files("alexnet.inference").joinpath("serve_page.html").read_text(encoding="utf-8")
    batcher: list[Batcher] = []  # made in the server's event loop, at start-up, as is the limiter

    decoders: list[anyio.CapacityLimiter] = []

    @contextlib.asynccontextmanager
    async def lifespan(app):
        batcher.append(Batcher(predictor, metrics, max_batch=settings.max_batch, wait_s=settings.batch_wait_ms / 1000))
        decoders.append(anyio.CapacityLimiter(DECODERS))
        batcher[0].start()
        yield
        await batcher[0].stop()

    async def predict(request: Request) -> Response:
        top = _top(request.query_params.get("top"))
        name, data = await _upload(request, settings.max_bytes)
        x = await anyio.to_thread.run_sync(_model_input, predictor, data, name, limiter=decoders[0])
        probs = await batcher[0].probabilities(x)
        return JSONResponse({"image": name, "predictions": predictor.ranked(probs, top)})

    async def health(request: Request) -> Response:
        p = predictor.preprocess
        return JSONResponse(
            {
                "status": "ok",
                "checkpoint": Path(settings.checkpoint).name,
                "classes": len(predictor.classes),
                "image_size": p.image_size,
                "mode": p.mode,
                "device": str(predictor.device),
                "max_batch": settings.max_batch,
                "max_bytes": settings.max_bytes,
            }
        )

    async def show_metrics(request: Request) -> Response:
        return PlainTextResponse(metrics.render(), media_type=CONTENT_TYPE)

    async def index(request: Request) -> Response:
        return HTMLResponse(page, headers={"Content-Security-Policy": PAGE_POLICY})

    async def refused(request: Request, e: Exception) -> Response:
        if isinstance(e, HTTPException):
            return _error(e.status_code, f"{request.method} {request.url.path}: {e.detail}")
        return _error(e.status, str(e))

    async def failed(request: Request, e: Exception) -> Response:
        return _error(500, f"internal error: {first_line(e)}")

    routes = [
        Route("/", index),
        Route("/health", health),
        Route("/metrics", show_metrics),
        Route("/predict", predict, methods=["POST"]),
    ]
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={HTTPException: refused, RequestError: refused, Exception: failed},
    )
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    return app


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse(
        {"error": " ".join(message.split())}, status_code=status, headers={"X-Content-Type-Options": "nosniff"}
    )


def _top(text: str | None) -> int:
    """``?top=K``: a positive integer; beyond the classes it means all of them, so any number of
    digits is taken without reading it whole (Python refuses to read one of over 4300 digits)."""
    if text is None:
        return 5
    digits = text.lstrip("0")
    if not _digits(text) or not digits:
        raise RequestError(400, f"top must be a positive integer, got {text[:40]!r}")
    return int(digits) if len(digits) <= 9 else 10**9


def _digits(text: str) -> bool:
    return text.isascii() and text.isdigit()  # str.isdigit() alone takes "²", which int() refuses


async def _upload(request: Request, max_bytes: int) -> tuple[str, bytes]:
    """The uploaded file's name and bytes: the ``file`` field of a multipart/form-data body, or a
    raw ``image/*`` body. Refused: another content type (415), a body over ``max_bytes`` (413,
    from its Content-Length before anything is read, or as it arrives), a malformed form (400)."""
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    declared = request.headers.get("content-length", "")
    if _digits(declared) and int(declared) > max_bytes:
        raise _too_large(max_bytes)
    try:
        if media == "multipart/form-data":
            return await _form_file(request, max_bytes)
        if media.startswith("image/"):
            return "request body", b"".join([chunk async for chunk in _limited(request.stream(), max_bytes)])
    except ClientDisconnect:
        raise RequestError(400, "the client left before sending the whole body") from None
    raise RequestError(
        415,
        f"Content-Type {media[:80] or '(none)'} is not accepted: send multipart/form-data with the image in "
        "a field named 'file', or the image itself with Content-Type image/*",
    )


async def _form_file(request: Request, max_bytes: int) -> tuple[str, bytes]:
    parser = MultiPartParser(request.headers, _limited(request.stream(), max_bytes), max_files=1, max_fields=8)
    try:
        form = await parser.parse()
    except MultiPartException as e:
        raise RequestError(400, f"malformed multipart/form-data body ({e.message})") from None
    try:
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise RequestError(400, "multipart/form-data body without a file in a field named 'file'")
        name = " ".join((upload.filename or "").split())[:100] or "upload"  # it names the image in messages
        return name, await upload.read()
    finally:
        await form.close()


async def _limited(stream, max_bytes: int):
    """The chunks of ``stream``, refused with a 413 as soon as they add up to more than ``max_bytes``."""
    total = 0
    async for chunk in stream:
        total += len(chunk)
        if total > max_bytes:
            raise _too_large(max_bytes)
        yield chunk


def _too_large(max_bytes: int) -> RequestError:
    return RequestError(413, f"request body over the limit of {max_bytes:,} bytes (alexnet serve --max-bytes)")


def _model_input(predictor: Predictor, data: bytes, name: str) -> torch.Tensor:
    """Decode untrusted bytes as every image file is decoded, then preprocess as evaluation does.
    A refused image is a 415 (a format that is not decoded), 422 (a size out of bounds, told from
    the header) or 400 (empty, not an image, damaged)."""
    try:
        image = decode_image(data, predictor.preprocess.mode, name=name, decode_side=predictor.preprocess.decode_side)
    except ImageError as e:
        status = 415 if isinstance(e, ImageFormatError) else 422 if isinstance(e, ImageSizeError) else 400
        raise RequestError(status, str(e)) from None
    return predictor.preprocess(image)


# --------------------------------------------------------------------------------------------
# The server


def is_loopback(address: str) -> bool:
    """Whether ``address`` (an IP address) is this machine only (127.0.0.0/8, ::1)."""
    with contextlib.suppress(ValueError):
        return ipaddress.ip_address(address.split("%")[0]).is_loopback
    return False


def resolve(host: str, port: int) -> tuple:
    """``socket.getaddrinfo``'s first answer for listening on ``host``:``port``, or a one-line
    :class:`ConfigError`."""
    try:
        return socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    except (socket.gaierror, UnicodeError) as e:
        raise ConfigError(
            f"--host {host}: not an address of this machine ({getattr(e, 'strerror', None) or e})"
        ) from None


def listen(address: tuple, host: str) -> socket.socket:
    """A socket bound to the ``address`` :func:`resolve` gave and listening, or a one-line
    :class:`ConfigError` (a port in use, an address not on this machine)."""
    family, kind, proto, _, where = address
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a restart may reuse a port in TIME_WAIT
        sock.bind(where)
        sock.listen(2048)
    except OSError as e:
        sock.close()
        hint = "; choose another --port, or --port 0 for any free one" if e.errno == errno.EADDRINUSE else ""
        raise ConfigError(f"cannot listen on {host} port {where[1]} ({e.strerror or e}){hint}") from None
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://{'[' + host + ']' if ':' in host else host}:{port}/"


def serve(settings: ServeSettings) -> int:
    """Run the service until Ctrl-C or SIGTERM (requests in flight get up to 5 s to finish)."""
    import uvicorn

    address = resolve(settings.host, settings.port)
    if not is_loopback(address[4][0]):
        print(
            f"alexnet serve: warning: --host {settings.host} is reachable from the network: anyone who can reach "
            f"port {settings.port} can use the service (there is no authentication)",
            file=sys.stderr,
        )
    sock = listen(address, settings.host)
    try:
        predictor = Predictor.load(
            settings.checkpoint, device=settings.device, source=f"--checkpoint {settings.checkpoint}"
        )
        config = uvicorn.Config(
            build_app(predictor, settings), log_level="warning", access_log=False, timeout_graceful_shutdown=5
        )
        print(
            (
                f"alexnet serve: {len(predictor.classes)} classes from {settings.checkpoint} on {url_of(sock)} (Ctrl-C "
                "stops)"
            ),
            flush=True,
        )
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        sock.close()
    return 0
