"""The service's metrics, ``GET /metrics``: requests by route and status, a latency histogram by
route, and the forward passes run, in Prometheus' text format (version 0.0.4).

:class:`MetricsMiddleware` times every HTTP request from its arrival to the end of its answer;
the batcher counts its passes and their images; :meth:`Metrics.render` writes the page. Routes
other than :data:`ROUTES` count as ``other``, so a scan of random paths cannot grow the label set.
"""

from __future__ import annotations

import time

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)  # seconds
ROUTES = ("/", "/health", "/metrics", "/predict")  # metric labels; any other path counts as "other"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"  # Prometheus' text format


class Metrics:
    """Request counts by route and status, a latency histogram by route, and the batches run:
    rendered in Prometheus' text format (version 0.0.4)."""

    def __init__(self):
        self.requests: dict[tuple[str, int], int] = {}
        self.latency: dict[str, list] = {}  # route -> [bucket counts..., count, sum]
        self.batches = self.images = 0

    def observe(self, route: str, status: int, seconds: float) -> None:
        self.requests[route, status] = self.requests.get((route, status), 0) + 1
        h = self.latency.setdefault(route, [0] * len(LATENCY_BUCKETS) + [0, 0.0])
        for i, bound in enumerate(LATENCY_BUCKETS):
            h[i] += seconds <= bound
        h[-2] += 1
        h[-1] += seconds

    def render(self) -> str:
        lines = [
            "# HELP alexnet_requests_total HTTP requests answered, by route and status.",
            "# TYPE alexnet_requests_total counter",
        ]
        lines += [
            f'alexnet_requests_total{{route="{r}",status="{s}"}} {n}' for (r, s), n in sorted(self.requests.items())
        ]
        lines += [
            "# HELP alexnet_request_duration_seconds Time from a request's arrival to the end of its answer.",
            "# TYPE alexnet_request_duration_seconds histogram",
        ]
        for route, h in sorted(self.latency.items()):
            for bound, n in zip(LATENCY_BUCKETS, h):
                lines.append(f'alexnet_request_duration_seconds_bucket{{route="{route}",le="{bound}"}} {n}')
            lines.append(f'alexnet_request_duration_seconds_bucket{{route="{route}",le="+Inf"}} {h[-2]}')
            lines.append(f'alexnet_request_duration_seconds_count{{route="{route}"}} {h[-2]}')
            lines.append(f'alexnet_request_duration_seconds_sum{{route="{route}"}} {h[-1]:.6f}')
        lines += [
            "# HELP alexnet_batches_total Forward passes run.",
            "# TYPE alexnet_batches_total counter",
            f"alexnet_batches_total {self.batches}",
            "# HELP alexnet_batch_images_total Images in those forward passes (divided by the passes: the mean batch).",
            "# TYPE alexnet_batch_images_total counter",
            f"alexnet_batch_images_total {self.images}",
        ]
        return "\n".join(lines) + "\n"


class MetricsMiddleware:
    """ASGI middleware: each HTTP request's status and time from arrival to the end of its answer."""

    def __init__(self, app, metrics: Metrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start, status = time.perf_counter(), [500]

        async def sending(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            route = scope["path"] if scope["path"] in ROUTES else "other"
            self.metrics.observe(route, status[0], time.perf_counter() - start)
