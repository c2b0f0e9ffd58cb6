"""The benchmark, run small: every phase runs and reports figures of the right shape.

No timing thresholds: latency is only checked to be measured (positive, p50 <= p99).
The one exception is the loop-lag ticker, checked against a stall the test makes.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any, Final

import pytest
from click.testing import CliRunner
from pymongo import AsyncMongoClient, MongoClient

from chatkit_mongo import CollectionNames, MongoStore
from chatkit_mongo.apps.bench import (
    ENCRYPTION_PHASES,
    PHASES,
    BenchSettings,
    bench_command,
    cold,
    encryption,
    overhead,
    run_benchmark,
    written,
)
from chatkit_mongo.apps.bench.explain import explain_figures
from chatkit_mongo.apps.bench.harness import (
    OPERATIONS,
    STALL_LIMIT_MS,
    STORE_OPERATIONS,
    LoopLag,
    RoundTrips,
    beside,
)
from chatkit_mongo.operations.explain import summarise

from . import capabilities
from .conftest import is_server, scratch_database

ROOT: Final = Path(__file__).resolve().parent.parent
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
TINY_CLI: Final = (
    *("--users", "2", "--threads-per-user", "1", "--turns", "2", "--pairs", "2"),
    *("--seconds-per-level", "0.1", "--page-size", "3"),
)


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
    for figures in operations.values():
        check_latencies(figures)
        assert figures["round_trips_per_call"] == 1.0, "each of these is one command"
    assert report["settings"]["sizes"] == [6, 20]
    assert report["growth"] == []
    assert report["overhead"] == {}
    assert report["concurrency"] == []


async def test_every_phase_reports_the_loop_lag_and_a_cold_store_its_first_writes(
    store: MongoStore[Any],
) -> None:
    report = await run_benchmark(store, replace(QUICK, pairs=1, concurrency=(1,)))

    assert list(report["loop_lag"]) == [phase.name for phase in PHASES]
    for figures in report["loop_lag"].values():
        assert 0 <= figures["lag_p99_ms"] <= figures["lag_max_ms"]
    assert list(report["first_write_stall_ms"]) == ["thread", "item", "attachment"]
    assert all(stall >= 0 for stall in report["first_write_stall_ms"].values())
    assert report["stall_limit_ms"] == STALL_LIMIT_MS
    threads = await store.load_threads(5, None, "asc", {"user_id": cold.OWNER})
    assert len(threads.data) == 1, "the cold writes went through the store, as its owner's"


async def test_the_ticker_measures_a_stall_and_not_a_wait() -> None:
    async def blocks() -> None:
        time.sleep(0.05)  # noqa: ASYNC251  (the stall the ticker must see)

    async with LoopLag() as lag:
        blocked = await lag.stall(blocks())
        mark = await lag.mark()
        await asyncio.sleep(0.02)
        waited = await lag.figures(mark)
    assert blocked >= 45
    assert waited["lag_max_ms"] < blocked


class SlowFirstWrites:
    """A database whose collections block the event loop for 50 ms on their first write,
    as first-use work (compiling, warming) would: what the cold phase must show."""

    def __init__(self, database: Any) -> None:
        self.database = database
        self.written: set[str] = set()

    @property
    def name(self) -> str:
        return str(self.database.name)

    @property
    def client(self) -> Any:
        return self.database.client

    def command(self, command: Any, /) -> Any:
        return self.database.command(command)

    def __getitem__(self, name: str) -> Any:
        return SlowCollection(self.database[name], self.written)


class SlowCollection:
    _WRITES: Final = frozenset({"insert_one", "update_one", "replace_one", "find_one_and_update"})

    def __init__(self, collection: Any, written: set[str]) -> None:
        self.collection, self.written = collection, written

    def __getattr__(self, name: str) -> Any:
        if name in self._WRITES and self.collection.name not in self.written:
            self.written.add(self.collection.name)
            time.sleep(0.05)  # blocks the loop, as first-use work would
        return getattr(self.collection, name)


async def test_the_cold_phase_shows_what_a_first_write_stalls(database: Any) -> None:
    report = await run_benchmark(
        MongoStore(SlowFirstWrites(database)), QUICK, phases=[cold.PHASE], round_trips=RoundTrips()
    )
    for model, stall in report["first_write_stall_ms"].items():
        assert stall >= 45, model
    assert report["loop_lag"]["cold"]["lag_max_ms"] >= 45


async def test_every_store_operation_is_paired_with_the_same_commands_sent_bare(
    store: MongoStore[Any],
) -> None:
    """The A/B compares like with like: per pair, the store sends exactly the commands
    its bare side sends, and both sides are timed every pair."""
    report = await run_benchmark(store, replace(QUICK, pairs=4), phases=[overhead.phase()])

    assert list(report["overhead"]) == list(STORE_OPERATIONS)
    for operation, figures in report["overhead"].items():
        assert figures["pairs"] == 4
        assert figures["store_p50_us"] > 0
        assert figures["bare_p50_us"] > 0
        ratio = figures["store_p50_us"] / figures["bare_p50_us"]
        assert figures["ratio"] == pytest.approx(ratio, abs=0.01)
        expected = 3 if operation == "delete_thread" else 1
        assert figures["store_round_trips"] == figures["bare_round_trips"] == expected, operation
    assert report["overhead_limit"] == overhead.OVERHEAD_LIMIT


async def test_the_overhead_phase_runs_again_as_a_variant_on_another_store(
    store: MongoStore[Any],
) -> None:
    """The seam for comparing configurations (e.g. with tracing on) in one run: both
    sides of the variant's pairs work in its store's collections, not the run's."""
    variant = overhead.phase(
        "other", lambda run: run.new_store(beside(run.store.collections, "other"))
    )
    report = await run_benchmark(store, replace(QUICK, pairs=2), phases=[variant])

    assert list(report["overhead[other]"]) == list(STORE_OPERATIONS)
    assert list(report["loop_lag"]) == ["overhead[other]"]
    for figures in report["overhead[other]"].values():
        assert figures["store_round_trips"] == figures["bare_round_trips"]
    owner = {"user_id": overhead.OWNER}
    assert (await store.load_threads(5, None, "asc", owner)).data == []
    names = beside(store.collections, "other")
    assert await store.database[names.threads].find_one({}) is not None, "its own store wrote"
    assert await store.database[store.collections.items].find_one({}) is None, "bare, too"


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
    report = await run_benchmark(store, replace(TINY, pairs=0, concurrency=()))

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
        capabilities.server().uri, event_listeners=[round_trips]
    )
    async with scratch_database(client, backend) as database:
        report = await run_benchmark(
            MongoStore(database), replace(QUICK, pairs=2), round_trips=round_trips
        )
    await client.close()
    for figures in report["operations"].values():
        assert figures["round_trips_per_call"] == 1.0
    for operation, figures in report["overhead"].items():
        expected = 3 if operation == "delete_thread" else 1
        assert figures["store_round_trips"] == figures["bare_round_trips"] == expected


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"users": 0}, "users must be at least 1"),
        ({"mib": 0}, "reply_words and mib must be at least 1"),
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
        *TINY_CLI,
        *("--concurrency", "1,2", "--growth", "--sizes", "4,10", "--samples", "2"),
        *("--out", str(out), "--chart", str(chart)),
    )

    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["backend"].startswith("embedded")
    assert report["driver"] == "motor-shaped"
    assert list(report["operations"]) == list(OPERATIONS)
    assert list(report["overhead"]) == list(STORE_OPERATIONS)
    assert [level["users"] for level in report["concurrency"]] == [1, 2]
    assert report["settings"]["sizes"] == [4, 10]
    assert [point["items"] for point in report["growth"]] == [4, 10]
    assert list(report["loop_lag"]) == [phase.name for phase in PHASES]
    assert report["seconds"] > 0
    assert chart.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    shown = ("first write", "load_thread_items", "bare driver", "lag p99 ms", "cannot explain")
    for text in (*shown, "event loop lag per phase"):
        assert text in result.stdout
    for phase in ("cold:", "overhead:", "workload:", "explain:", "concurrency:", "growth:"):
        assert phase in result.stderr, "progress names every phase"


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (("--sizes", "100,lots"), "expected sizes like 100,1000,10000"),
        (("--sizes", "100,10"), "sizes must be positive and increasing"),
        (("--concurrency", "1,many"), "expected user counts like 1,8,32,128"),
        (("--driver", "pymongo"), "--driver pymongo needs a server"),
        (("--encryption",), "--encryption needs a server for the key vault: pass --uri"),
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
            *("--uri", capabilities.server().uri, "--driver", driver, *TINY_CLI),
            *("--concurrency", "2", "--out", str(out)),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    report = json.loads(out.read_text())
    assert report["driver"] == driver
    assert report["backend"].startswith("MongoDB")
    assert list(report["loop_lag"]) == [phase.name for phase in PHASES]
    if not capabilities.has("explain"):
        assert "cannot explain queries: the server refused explain" in result.output
    if not capabilities.has("dropDatabase"):
        assert "the server cannot drop databases" in result.output


def leftovers(uri: str, database: str, collections: list[str]) -> list[str]:
    """What a run left behind, by what the server can tell: any database of a benchmark
    where it lists databases, else any document in a collection the run wrote."""
    client: MongoClient[dict[str, Any]]
    with MongoClient(uri) as client:
        if capabilities.has("listDatabases"):
            names = client.list_database_names()
            return [name for name in names if name == database or name.startswith("bench")]
        return [name for name in collections if client[database][name].find_one() is not None]


def test_the_encryption_mode_measures_both_drivers_and_leaves_nothing_behind(
    tmp_path: Path,
) -> None:
    uri, database = capabilities.server().uri, f"chatkit_bench_{uuid.uuid4().hex[:8]}"
    out, chart = tmp_path / "bench.json", tmp_path / "bench.png"
    collections = written(TINY, CollectionNames(), ENCRYPTION_PHASES)
    assert encryption.KEY_VAULT in collections
    assert leftovers(uri, database, collections) == []
    result = CliRunner().invoke(
        bench_command,
        [
            *("--encryption", "--uri", uri, "--database", database, "--pairs", "2"),
            *("--mib", "1", "--out", str(out), "--chart", str(chart)),
        ],
    )

    assert result.exit_code == 0, result.output
    runs = json.loads(out.read_text())["runs"]
    assert [run["driver"] for run in runs] == ["pymongo", "motor"]
    for run in runs:
        figures = run["encryption"]
        assert figures["key_vault"] == f"{database}.{encryption.KEY_VAULT}"
        assert list(figures["operations"]) == [*STORE_OPERATIONS, "turn"]
        for row in figures["operations"].values():
            assert row["pairs"] == 2
            assert row["ratio"] == pytest.approx(
                row["encrypted_p50_us"] / row["plain_p50_us"], abs=0.01
            )
        assert {"upload", "download"} <= set(figures["bytes"])
        bytes_ = figures["bytes"]
        assert bytes_["encrypted_stored_bytes_per_mib"] > bytes_["plain_stored_bytes_per_mib"]
        assert list(run["loop_lag"]) == ["encryption"]
    for driver in ("pymongo", "motor"):
        for part in ("Store operations", "attachment bytes"):
            assert f"{driver}: encryption: {part}" in result.stderr, "progress on each driver"
    assert result.stdout.count("turn ") == 2
    assert chart.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert leftovers(uri, database, collections) == [], "nothing outlives the run"


# ---------------------------------------------------------------------- extras

BLOCKER: Final = '''
import os, sys

class Blocker:
    """Imports of the modules named in BLOCKED_MODULES fail, as where they are not installed."""

    blocked = os.environ["BLOCKED_MODULES"].split(",")

    @classmethod
    def find_spec(cls, name, path=None, target=None):
        if any(name == b or name.startswith(b + ".") for b in cls.blocked):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, Blocker)
'''
HINT: Final = "pip install -e '.[bench]' in a checkout, or pip install 'chatkit-mongo[bench] @ git+"


def cli_without(tmp_path: Path, blocked: str, *arguments: str) -> subprocess.CompletedProcess[str]:
    """``chatkit-mongo`` in a fresh process where ``blocked`` modules cannot be imported:
    a meta-path blocker on its PYTHONPATH, as the base install would be without them."""
    (tmp_path / "block_imports.py").write_text(BLOCKER)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)]),
        "BLOCKED_MODULES": blocked,
        "MONGODB_URI": "",
    }
    code = "import sys, block_imports; from chatkit_mongo.apps.cli import main; main(sys.argv[1:])"
    return subprocess.run(
        [sys.executable, "-c", code, *arguments],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


BASE_ONLY: Final = "mongomock,mongomock_motor,matplotlib"


def test_bench_help_needs_only_the_base_install(tmp_path: Path) -> None:
    result = cli_without(tmp_path, BASE_ONLY, "bench", "--help")
    assert result.returncode == 0, result.stderr
    assert "bench [OPTIONS]" in result.stdout


def test_bench_on_a_server_needs_no_test_double(tmp_path: Path) -> None:
    result = cli_without(
        tmp_path,
        BASE_ONLY,
        *("bench", "--uri", capabilities.server().uri, *TINY_CLI, "--concurrency", "0"),
    )
    assert result.returncode == 0, result.stderr
    assert json.loads((tmp_path / "bench.json").read_text())["backend"].startswith("MongoDB")


@pytest.mark.parametrize(
    ("blocked", "arguments", "first"),
    [
        (BASE_ONLY, ("bench",), "Error: without --uri the benchmark runs on the embedded backend"),
        (
            "matplotlib",
            ("bench", "--chart", "bench.png"),
            "Error: --chart needs matplotlib: ",
        ),
        ("chatkit_mongo.apps.bench", ("bench", "--help"), "Error: 'bench' needs the bench extra: "),
    ],
)
def test_a_missing_extra_is_named_with_an_install_line_that_works_without_a_registry(
    tmp_path: Path, blocked: str, arguments: tuple[str, ...], first: str
) -> None:
    result = cli_without(tmp_path, blocked, *arguments)
    assert result.returncode == 1
    assert result.stderr.startswith(first)
    assert HINT in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "bench.json").exists(), "nothing ran"
