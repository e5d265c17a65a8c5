"""`python -m bench --fleet`'s pure parts: call routing over the nodes, the node config, log counting."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.__main__ import build_parser
from bench.daemon import bridge_config
from bench.fleet import cluster_section, count_events, fleet_routes, quantiles
from bench.loadgen import LoadSpec
from bridge.keys import hash_key
from bridge.settings import load_settings


def test_every_call_crosses_nodes_and_each_node_takes_a_share() -> None:
    urls = ["http://a", "http://b", "http://c"]
    routes = fleet_routes(urls)
    assert all(webhook != media for webhook, media in routes)
    assert sorted(w for w, _ in routes) == urls
    assert sorted(m for _, m in routes) == urls
    assert fleet_routes(["http://a"]) == (("http://a", "http://a"),)
    with pytest.raises(ValueError):
        fleet_routes([])


def test_load_spec_routes_round_trip_and_default_to_one_url() -> None:
    spec = LoadSpec(url="http://a", connector_key="k", called="+1", calls=4, seconds=1.0)
    assert spec.route(3) == ("http://a", "http://a")
    routed = LoadSpec(
        url="http://a",
        connector_key="k",
        called="+1",
        calls=4,
        seconds=1.0,
        routes=fleet_routes(["http://a", "http://b"]),
    )
    again = LoadSpec.from_json(routed.to_json())
    assert again == routed
    assert [again.route(i) for i in range(3)] == [
        ("http://a", "http://b"),
        ("http://b", "http://a"),
        ("http://a", "http://b"),
    ]


def test_node_config_loads_as_a_cluster_node_on_postgresql(tmp_path: Path) -> None:
    text = bridge_config(
        connector_hash=hash_key("c"),
        company_hash=hash_key("k"),
        max_calls=110,
        db_path=tmp_path / "unused.db",
        provider="echo",
        store_url="postgresql://postgres@127.0.0.1:5999/bench_1",
        extra=cluster_section("redis://127.0.0.1:6999/0", "bench-1"),
    )
    path = tmp_path / "bridge.toml"
    path.write_text(text)
    settings = load_settings(path)
    assert settings.cluster is not None
    assert settings.cluster.node_id == "bench-1"
    assert settings.storage.url.startswith("postgresql://")


def test_count_events_after_offset(tmp_path: Path) -> None:
    log = tmp_path / "bridge.log"
    log.write_text(json.dumps({"event": "call_ended"}) + "\n")
    offset = log.stat().st_size
    with log.open("a") as f:
        f.write("not json\n{broken\n")
        for name in ("call_ended", "call_taken_over", "call_ended"):
            f.write(json.dumps({"event": name}) + "\n")
    assert count_events(log, 0, "call_ended") == 3
    assert count_events(log, offset, "call_ended") == 2
    assert count_events(log, offset, "call_taken_over") == 1


def test_quantiles_and_parser() -> None:
    q = quantiles([float(x) for x in range(1, 101)])
    values = [q["p50"], q["p95"], q["p99"], q["max"]]
    assert None not in values
    assert values == sorted(v for v in values if v is not None)
    assert quantiles([]) == {"p50": None, "p95": None, "p99": None, "max": None}
    args = build_parser().parse_args(["--fleet", "--nodes", "3", "--calls", "50,100"])
    assert (args.fleet, args.nodes, args.calls) == (True, 3, [50, 100])
