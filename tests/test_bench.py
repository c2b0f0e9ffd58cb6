"""The benchmark, run small: the figures it reports have the right shape and are sane.

No timing thresholds: latency is only checked to be measured (positive, p50 <= p99).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from pymongo import AsyncMongoClient

from chatkit_mongo import MongoStore
from chatkit_mongo.bench import (
    OPERATIONS,
    BenchSettings,
    CommandCounter,
    RoundTrips,
    bench_command,
    explain_figures,
    run_benchmark,
)
from chatkit_mongo.explain import summarise

from . import capabilities
from .conftest import is_server, scratch_database

TINY = BenchSettings(
    users=2, threads_per_user=2, turns_per_thread=3, sizes=(6, 20), samples_per_size=2, page_size=4
)
TURNS = TINY.users * TINY.threads_per_user * TINY.turns_per_thread


def check_latencies(figures: dict[str, Any]) -> None:
    assert 0 < figures["p50_ms"] <= figures["p99_ms"]


async def test_the_workload_reports_every_operation(store: MongoStore[Any]) -> None:
    report = await run_benchmark(store, TINY)

    operations = report["operations"]
    assert list(operations) == list(OPERATIONS)
    assert operations["save_thread"]["calls"] == TINY.users * TINY.threads_per_user
    assert operations["add_thread_item"]["calls"] == 2 * TURNS
    for name in ("load_thread", "load_thread_items", "load_threads"):
        assert operations[name]["calls"] == TURNS
    for figures in operations.values():
        check_latencies(figures)
        assert figures["round_trips_per_call"] == 1.0, "each of these is one command"
    assert report["settings"]["sizes"] == [6, 20]


async def test_one_thread_grows_through_each_size(store: MongoStore[Any]) -> None:
    report = await run_benchmark(store, TINY)

    growth = report["growth"]
    assert [point["items"] for point in growth] == [6, 20]
    for point in growth:
        assert set(point["operations"]) == set(OPERATIONS) - {"save_thread"}
        for name, figures in point["operations"].items():
            per_turn = 2 if name == "add_thread_item" else 1
            assert figures["calls"] == per_turn * TINY.samples_per_size
            check_latencies(figures)
    assert set(report["growth_p50_ratio"]) == set(growth[0]["operations"])
    assert all(ratio > 0 for ratio in report["growth_p50_ratio"].values())

    grower = (await store.load_threads(10, None, "desc", {"user_id": "bench-grower"})).data
    assert len(grower) == 1
    items = await store.load_thread_items(grower[0].id, None, 1000, "asc", {"user_id": "x"})
    assert items.data == [], "the grown thread belongs to its own user only"
    grown = await store.load_thread_items(
        grower[0].id, None, 1000, "asc", {"user_id": "bench-grower"}
    )
    assert len(grown.data) == growth[-1]["items"] + 2 * TINY.samples_per_size


async def test_explain_figures_come_from_the_server_or_are_declared_unknown(
    store: MongoStore[Any], backend: str
) -> None:
    report = await run_benchmark(store, TINY)

    if is_server(backend) and capabilities.has("explain"):
        assert report["explain_note"] is None
        for figures in report["explain"].values():
            assert figures["index_scan"] is True
            assert figures["in_memory_sort"] is False
            assert figures["docs_examined_per_returned"] <= 1.0
    else:
        assert report["explain"] is None
        assert "cannot explain" in report["explain_note"]


def test_explain_output_is_read_as_a_server_writes_it() -> None:
    """An executionStats explain of the items page, as MongoDB 7 returns it."""
    output = {
        "queryPlanner": {
            "winningPlan": {
                "stage": "LIMIT",
                "inputStage": {
                    "stage": "PROJECTION_SIMPLE",
                    "inputStage": {
                        "stage": "FETCH",
                        "inputStage": {"stage": "IXSCAN", "indexName": "owner_thread_sort"},
                    },
                },
            },
        },
        "executionStats": {"nReturned": 21, "totalKeysExamined": 21, "totalDocsExamined": 21},
    }
    assert explain_figures(summarise(output)) == {
        "returned": 21,
        "keys_examined": 21,
        "docs_examined": 21,
        "docs_examined_per_returned": 1.0,
        "index_scan": True,
        "in_memory_sort": False,
    }
    scanned = {
        "queryPlanner": {"winningPlan": {"stage": "SORT", "inputStage": {"stage": "COLLSCAN"}}},
        "executionStats": {"nReturned": 0, "totalKeysExamined": 0, "totalDocsExamined": 500},
    }
    figures = explain_figures(summarise(scanned))
    assert figures["docs_examined_per_returned"] == 500
    assert figures["index_scan"] is False
    assert figures["in_memory_sort"] is True


@pytest.mark.parametrize("backend", ["server-pymongo"], indirect=True)
async def test_commands_are_counted_by_a_listener_on_a_real_client(backend: str) -> None:
    round_trips = RoundTrips()
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        capabilities.server().uri, event_listeners=[CommandCounter(round_trips)]
    )
    async with scratch_database(client, backend) as database:
        report = await run_benchmark(MongoStore(database), TINY, round_trips=round_trips)
    await client.close()
    for figures in report["operations"].values():
        assert figures["round_trips_per_call"] == 1.0


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"users": 0}, "users must be at least 1"),
        ({"sizes": (100, 10)}, "sizes must be positive and increasing"),
        ({"sizes": ()}, "sizes must be positive and increasing"),
        ({"page_size": 5000}, "page_size must be between 1 and 1000"),
    ],
)
def test_settings_refuse_nonsense(change: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        BenchSettings(**change)


def run_cli(*arguments: str) -> Any:
    return CliRunner(env={"MONGODB_URI": None}).invoke(bench_command, list(arguments))


def test_the_command_writes_json_and_a_chart(tmp_path: Path) -> None:
    out, chart = tmp_path / "bench.json", tmp_path / "bench.png"
    result = run_cli(
        *("--users", "2", "--threads-per-user", "1", "--turns", "2"),
        *("--sizes", "4,10", "--samples", "2", "--page-size", "3"),
        *("--out", str(out), "--chart", str(chart)),
    )

    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["backend"].startswith("embedded")
    assert list(report["operations"]) == list(OPERATIONS)
    assert report["settings"]["sizes"] == [4, 10]
    assert report["seconds"] > 0
    assert chart.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert "load_thread_items" in result.output
    assert "cannot explain" in result.output


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (("--sizes", "100,lots"), "expected sizes like 100,1000,10000"),
        (("--sizes", "100,10"), "sizes must be positive and increasing"),
    ],
)
def test_the_command_refuses_bad_arguments(
    tmp_path: Path, arguments: tuple[str, ...], message: str
) -> None:
    result = run_cli(*arguments, "--out", str(tmp_path / "bench.json"))
    assert result.exit_code == 2
    assert message in result.output
    assert not (tmp_path / "bench.json").exists()
