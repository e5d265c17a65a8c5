"""Histograms from the Prometheus text format and their quantiles (bench/promtext.py), and the scraper
that collects them from a real HTTP server on loopback (bench.daemon.MetricsScraper)."""

from __future__ import annotations

import http.server
import math
import threading
import time
from collections.abc import Iterator

import pytest

from bench.daemon import MetricsScraper
from bench.promtext import (
    DOWNLINK,
    UPLINK,
    Histogram,
    Scrape,
    delta,
    histogram_quantile,
    observed_ms,
    parse_histogram,
    window_latency,
)

INF = math.inf


def exposition(counts: tuple[int, int, int, int], name: str = UPLINK, labels: str = "") -> str:
    """A histogram as prometheus-client writes it (float values, `le` last among the labels)."""
    bounds = ("0.001", "0.005", "0.01", "+Inf")
    lines = [f"# HELP {name} Bridge-added latency.", f"# TYPE {name} histogram"]
    sep = "," if labels else ""
    lines += [
        f'{name}_bucket{{{labels}{sep}le="{b}"}} {float(c)}' for b, c in zip(bounds, counts, strict=True)
    ]
    lines += [f"{name}_count{{{labels}}} {float(counts[-1])}", f"{name}_sum{{{labels}}} 0.25"]
    return "\n".join(lines) + "\n"


def test_quantile_interpolates_inside_the_bucket_like_prometheus() -> None:
    bounds, counts = (0.001, 0.005, 0.01, INF), (10, 60, 90, 100)
    # rank 50 lies in (0.001, 0.005], 40 of its 50 observations in: 0.001 + 0.004 * 0.8
    assert histogram_quantile(0.5, bounds, counts) == pytest.approx(0.0042)
    # the lowest bucket starts at 0
    assert histogram_quantile(0.05, bounds, counts) == pytest.approx(0.0005)
    # a rank in the +Inf bucket gives the highest finite bound
    assert histogram_quantile(0.99, bounds, counts) == pytest.approx(0.01)
    assert histogram_quantile(1.0, bounds, counts) == pytest.approx(0.01)
    assert histogram_quantile(0.0, bounds, counts) == pytest.approx(0.0)


def test_quantile_where_prometheus_gives_nan() -> None:
    assert histogram_quantile(0.5, (0.001, INF), (0, 0)) is None  # nothing observed
    assert histogram_quantile(0.5, (0.001, 0.01), (1, 2)) is None  # no +Inf bucket
    assert histogram_quantile(0.5, (INF,), (3,)) is None  # one bucket
    with pytest.raises(ValueError, match=r"0\.\.1"):
        histogram_quantile(1.5, (0.001, INF), (1, 1))


def test_quantile_repairs_non_monotonic_counts() -> None:
    # A scrape racing an observation can show a lower bucket ahead of a higher one.
    assert histogram_quantile(0.5, (0.001, 0.005, INF), (6, 5, 10)) == pytest.approx(0.001 * 5 / 6)


def test_parse_sums_label_sets_and_ignores_other_metrics() -> None:
    text = (
        exposition((1, 2, 3, 4), labels='transport="chan_websocket"')
        + exposition((10, 20, 30, 40), labels='transport="audio,socket \\"x\\" }"')
        + exposition((5, 5, 5, 5), name=DOWNLINK)
        + "bridge_calls_active 3\n"
    )
    up = parse_histogram(text, UPLINK)
    assert up == Histogram((0.001, 0.005, 0.01, INF), (11.0, 22.0, 33.0, 44.0), 0.5, 44.0)
    down = parse_histogram(text, DOWNLINK)
    assert down is not None
    assert down.counts == (5.0, 5.0, 5.0, 5.0)


def test_parse_absent_or_incomplete_histogram_is_none() -> None:
    assert parse_histogram("bridge_calls_active 3\n", UPLINK) is None
    no_inf = f'{UPLINK}_bucket{{le="0.001"}} 1.0\n{UPLINK}_count 1.0\n'
    assert parse_histogram(no_inf, UPLINK) is None
    # a longer metric name that starts with ours is another metric
    other = exposition((1, 1, 1, 1), name=UPLINK + "_other")
    assert parse_histogram(other, UPLINK) is None


def test_delta_between_scrapes() -> None:
    before = parse_histogram(exposition((1, 2, 3, 4)), UPLINK)
    after = parse_histogram(exposition((11, 62, 93, 104)), UPLINK)
    assert before is not None
    assert after is not None
    d = delta(before, after)
    assert d is not None
    assert d.counts == (10.0, 60.0, 90.0, 100.0)
    assert d.count == 100.0
    assert delta(after, before) is None  # a counter went back: the bridge restarted
    other_buckets = Histogram((0.002, INF), (1.0, 2.0), 0.0, 2.0)
    assert delta(before, other_buckets) is None


def test_observed_ms_and_window_selection() -> None:
    texts = [exposition((0, 0, 0, 0)), exposition((1, 2, 3, 4)), exposition((11, 62, 93, 104))]
    scrapes = [
        Scrape(9.0, 9.1, texts[0]),  # before the window: not used
        Scrape(10.0, 10.1, texts[1]),
        Scrape(20.0, 20.1, texts[2]),
        Scrape(30.0, 30.1, exposition((99, 99, 99, 999))),  # after the window: not used
    ]
    dist = window_latency(scrapes, 10.0, 25.0, UPLINK)
    assert dist.n == 100
    assert dist.p50 == pytest.approx(4.2)
    assert dist.p99 == pytest.approx(10.0)
    assert dist.max is None
    # an older bridge without the metric, or too few scrapes in the window: nothing
    assert window_latency(scrapes, 10.0, 25.0, DOWNLINK).p50 is None
    assert window_latency(scrapes, 10.0, 15.0, UPLINK).n == 0
    assert observed_ms(None).p99 is None


class _Metrics(http.server.BaseHTTPRequestHandler):
    hits = 0

    def do_GET(self) -> None:
        type(self).hits += 1
        body = exposition((self.hits, 2 * self.hits, 3 * self.hits, 4 * self.hits)).encode()
        status = 200 if self.path == "/metrics" else 404
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def metrics_url() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Metrics)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_scraper_collects_timed_bodies_over_http(metrics_url: str) -> None:
    with MetricsScraper(metrics_url + "/metrics", interval=0.02) as scraper:
        deadline = time.monotonic() + 5.0
        while len(scraper.scrapes) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
    scrapes = list(scraper.scrapes)
    assert len(scrapes) >= 3
    assert all(s.started <= s.ended for s in scrapes)
    assert [s.started for s in scrapes] == sorted(s.started for s in scrapes)
    dist = window_latency(scrapes, scrapes[0].started, scrapes[-1].ended, UPLINK)
    assert dist.n == 4 * (len(scrapes) - 1)  # the server's counts grow by 4 a hit
    assert scraper.errors == 0


def test_scraper_counts_errors_and_keeps_going(metrics_url: str) -> None:
    with MetricsScraper(metrics_url + "/nope", interval=0.02) as scraper:
        deadline = time.monotonic() + 5.0
        while scraper.errors < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
    assert scraper.errors >= 2
    assert scraper.scrapes == []
