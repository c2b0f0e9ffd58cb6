"""The benchmark, run small: the figures it reports have the right shape and are sane.

No timing thresholds: latency is only checked to be measured (positive, p50 <= p99).
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from pymongo import AsyncMongoClient

from chatkit_mongo import MongoStore
from chatkit_mongo.apps import bench_encryption
from chatkit_mongo.apps.bench import (
    OPERATIONS,
    OVERHEAD_LIMIT,
    BenchSettings,
    CommandCounter,
    RoundTrips,
    bench_command,
    explain_figures,
    run_benchmark,
)
from chatkit_mongo.apps.bench_overhead import OVERHEAD_OPERATIONS
from chatkit_mongo.operations.explain import summarise

from . import capabilities
from .conftest import is_server, scratch_database

TINY = BenchSettings(
    users=2,
    threads_per_user=2,
    turns_per_thread=3,
    sizes=(6, 20),
    samples_per_size=2,
    page_size=4,
    pairs=3,
    concurrency=(1, 3),
    seconds_per_level=0.15,
    growth=True,
)
QUICK = replace(TINY, growth=False, pairs=0, concurrency=())
TURNS = TINY.users * TINY.threads_per_user * TINY.turns_per_thread
ROUND_TRIPS = {"delete_thread": 3, "save_thread": 2, "save_item": 2, "save_attachment": 2}
"""The calls of more than one round trip: the cascade, and the saves (a read, then the
conditional write)."""


def check_latencies(figures: dict[str, Any]) -> None:
    assert 0 < figures["p50_ms"] <= figures["p99_ms"]


async def test_the_workload_reports_every_operation(store: MongoStore[Any]) -> None:
    report = await run_benchmark(store, QUICK)

    operations = report["operations"]
    assert list(operations) == list(OPERATIONS)
    assert operations["save_thread"]["calls"] == TINY.users * TINY.threads_per_user
    assert operations["add_thread_item"]["calls"] == 2 * TURNS
    for name in ("load_thread", "load_thread_items", "load_threads"):
        assert operations[name]["calls"] == TURNS
    for operation, figures in operations.items():
        check_latencies(figures)
        # a save reads what it replaces, then writes; each other call is one command
        expected = 2.0 if operation == "save_thread" else 1.0
        assert figures["round_trips_per_call"] == expected, operation
    assert report["settings"]["sizes"] == [6, 20]
    assert report["growth"] == []
    assert report["overhead"] == {}
    assert report["concurrency"] == []


async def test_every_store_operation_is_paired_with_the_same_commands_sent_bare(
    store: MongoStore[Any],
) -> None:
    """The A/B compares like with like: per pair, the store sends exactly the commands
    its bare side sends, and both sides are timed every pair."""
    report = await run_benchmark(store, replace(QUICK, pairs=4))

    overhead = report["overhead"]
    assert list(overhead) == list(OVERHEAD_OPERATIONS)
    for operation, figures in overhead.items():
        assert figures["pairs"] == 4
        assert figures["store_p50_us"] > 0
        assert figures["bare_p50_us"] > 0
        ratio = figures["store_p50_us"] / figures["bare_p50_us"]
        assert figures["ratio"] == pytest.approx(ratio, abs=0.01)
        expected = ROUND_TRIPS.get(operation, 1)
        assert figures["store_round_trips"] == figures["bare_round_trips"] == expected, operation
    assert report["overhead_limit"] == OVERHEAD_LIMIT


async def test_concurrency_levels_report_throughput_latency_and_loop_lag(
    store: MongoStore[Any],
) -> None:
    report = await run_benchmark(store, replace(QUICK, concurrency=(1, 4)))

    levels = report["concurrency"]
    assert [level["users"] for level in levels] == [1, 4]
    for level in levels:
        assert level["turns"] >= level["users"], "every user finished at least one turn"
        assert level["turns_per_s"] > 0
        assert 0 < level["turn_p50_ms"] <= level["turn_p99_ms"]
        assert 0 <= level["lag_p99_ms"] <= level["lag_max_ms"]
    threads = await store.load_threads(10, None, "asc", {"user_id": "load-user-0"})
    assert threads.data == [], "each level writes collections of its own"


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
    report = await run_benchmark(store, QUICK)

    if is_server(backend) and capabilities.has("explain"):
        assert report["explain_note"] is None
        for figures in report["explain"].values():
            assert figures["index_scan"] is True
            assert figures["in_memory_sort"] is False
            assert figures["docs_examined_per_returned"] <= 1.0
    elif is_server(backend):  # a server without explain: its own words are reported
        assert report["explain_note"].startswith("cannot explain queries: the server refused")
    else:
        assert report["explain"] is None
        assert report["explain_note"] == (
            "cannot explain queries: this backend has no query planner"
        )


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
        report = await run_benchmark(
            MongoStore(database), replace(QUICK, pairs=2), round_trips=round_trips
        )
    await client.close()
    for operation, figures in report["operations"].items():
        assert figures["round_trips_per_call"] == (2.0 if operation == "save_thread" else 1.0)
    for operation, figures in report["overhead"].items():
        expected = ROUND_TRIPS.get(operation, 1)
        assert figures["store_round_trips"] == figures["bare_round_trips"] == expected


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"users": 0}, "users must be at least 1"),
        ({"sizes": (100, 10)}, "sizes must be positive and increasing"),
        ({"sizes": ()}, "sizes must be positive and increasing"),
        ({"page_size": 5000}, "page_size must be between 1 and 1000"),
        ({"pairs": -1}, "pairs must be at least 0"),
        ({"concurrency": (8, 0)}, "concurrency levels must be at least 1"),
        ({"seconds_per_level": 0}, "seconds_per_level must be positive"),
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
        *("--users", "2", "--threads-per-user", "1", "--turns", "2", "--pairs", "2"),
        *("--concurrency", "1,2", "--seconds-per-level", "0.1", "--growth"),
        *("--sizes", "4,10", "--samples", "2", "--page-size", "3"),
        *("--out", str(out), "--chart", str(chart)),
    )

    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["backend"].startswith("embedded")
    assert report["driver"] == "motor-shaped"
    assert list(report["operations"]) == list(OPERATIONS)
    assert list(report["overhead"]) == list(OVERHEAD_OPERATIONS)
    assert [level["users"] for level in report["concurrency"]] == [1, 2]
    assert report["settings"]["sizes"] == [4, 10]
    assert [point["items"] for point in report["growth"]] == [4, 10]
    assert report["seconds"] > 0
    assert chart.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    for shown in ("load_thread_items", "store overhead", "lag p99 ms", "cannot explain"):
        assert shown in result.output
    for phase in ("overhead:", "workload:", "explain:", "concurrency:", "growth:"):
        assert phase in result.output, "progress names every phase"


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (("--sizes", "100,lots"), "expected sizes like 100,1000,10000"),
        (("--sizes", "100,10"), "sizes must be positive and increasing"),
        (("--concurrency", "1,many"), "expected user counts like 1,8,32,128"),
        (("--driver", "pymongo"), "--driver pymongo needs a server"),
    ],
)
def test_the_command_refuses_bad_arguments(
    tmp_path: Path, arguments: tuple[str, ...], message: str
) -> None:
    result = run_cli(*arguments, "--out", str(tmp_path / "bench.json"))
    assert result.exit_code == 2
    assert message in result.output
    assert not (tmp_path / "bench.json").exists()


@pytest.mark.parametrize("driver", ["pymongo", "motor"])
def test_the_command_on_a_server_ends_cleanly_whatever_the_server_lacks(
    tmp_path: Path, driver: str
) -> None:
    """No traceback for a server without explain or dropDatabase (the wire test server
    lacks both): the server's own words, one line each, and a finished report."""
    out = tmp_path / "bench.json"
    result = CliRunner().invoke(
        bench_command,
        [
            *(
                "--uri",
                capabilities.server().uri,
                "--driver",
                driver,
                "--users",
                "2",
                "--threads-per-user",
            ),
            *("1", "--turns", "1", "--pairs", "2", "--concurrency", "2"),
            *("--seconds-per-level", "0.1", "--out", str(out)),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    report = json.loads(out.read_text())
    assert report["driver"] == driver
    if not capabilities.has("explain"):
        assert "cannot explain queries: the server refused explain" in result.output
    if "dropDatabase" in capabilities.server().missing:
        assert "the server cannot drop databases" in result.output


def test_the_encryption_mode_needs_a_server() -> None:
    result = CliRunner().invoke(bench_command, ["--encryption"], env={"MONGODB_URI": None})
    assert result.exit_code == 2
    assert "--encryption needs a server for the key vault: pass --uri" in result.output


@pytest.mark.parametrize(
    ("given", "drivers"), [([], ("pymongo", "motor")), (["--driver", "motor"], ("motor",))]
)
def test_the_encryption_mode_runs_the_encryption_benchmark(
    monkeypatch: pytest.MonkeyPatch, given: list[str], drivers: tuple[str, ...]
) -> None:
    """``bench --encryption`` prints what ``bench_encryption.run`` measures (run small in
    ``tests/test_encryption.py``), for the drivers asked for."""
    calls: list[tuple[str, tuple[str, ...]]] = []

    async def run(uri: str, drivers: tuple[str, ...]) -> list[str]:
        calls.append((uri, drivers))
        return ["pymongo:", "  figures"]

    monkeypatch.setattr(bench_encryption, "run", run)
    result = CliRunner().invoke(bench_command, ["--encryption", "--uri", "mongodb://h", *given])
    assert result.exit_code == 0, result.output
    assert result.output == "pymongo:\n  figures\n"
    assert calls == [("mongodb://h", drivers)]
