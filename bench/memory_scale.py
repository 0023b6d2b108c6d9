"""Memory and messages at a million wallets (issue 11, item 5): how many bytes per wallet a
load-generating process holds in its wallet pool and run record, how big one worker's record
message is when Locust sends it, and how long the master takes to read and merge two of them.

    .venv/bin/python bench/memory_scale.py                       # about 3 minutes
    .venv/bin/python bench/memory_scale.py --wallets 200000 --repeats 1 --json

Memory: each structure is built in a fresh subprocess from the same wallet ids (strings shaped like
the suite's, as seeding hands them to both the pool and the record) and measured as the growth of
the process's RSS (after gc.collect) and, in one more run each, as the bytes tracemalloc traces.
The pool gets every wallet as seeding adds it (a balance from the creation's answer and version
0); the record books each wallet's creation and --operations operations through its public API
(operation_sent, then operation_answered ok: credit, debit, transfer to the next wallet, in
turn). The baseline is a plain dict of the same ids to (balance, version) tuples of ints.

Messages: a worker's report (WorkerReport.to_message) for --message-wallets wallets, serialised
as Locust does (locust.rpc.protocol.Message), beside msgpack of a plain list holding the same
numbers per wallet; then sent through Locust's own zmq Client (DEALER) to its Server (ROUTER) on
loopback. The master's part: unserialise two such messages, WorkerReport.from_message, and
RunRecord.merge into one record, as Coordinator.collect does, beside a dict.update of two dicts
of the same sizes.

A printed figure, not a pass/fail test: targets are shown beside the figures. The exit code is
non-zero only when something broke (a subprocess failed).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import statistics
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_ROOT))

from reference_wallet.cli import OneLineArgumentParser  # noqa: E402

TARGET_BYTES_PER_WALLET = 400  # pool plus record
TARGET_MERGE_SECONDS = 2.0  # two workers of 500,000 wallets each
RUN_ID = "20261124004750-0f5515"  # the suite's run id shape: ids as long as a real run's
STRUCTURES = ("baseline", "pool", "record", "both")
# Locust's master marks a worker missing once its heartbeat counter (reset to 3 by each
# heartbeat, lowered by one each second) goes below 0: a worker whose event loop is blocked
# for about this long while it builds and serialises its message is reported missing.
HEARTBEAT_GRACE_SECONDS = 3.0


# --- building what a generator process holds ---------------------------------------------------


def wallet_ids(count: int, start: int = 0, step: int = 1) -> list[str]:
    from wallet_users.record.ids import wallet_id

    return [wallet_id(RUN_ID, i) for i in range(start, count, step)]


def initial_balances(count: int, seed: int = 1) -> list[Decimal]:
    rng = random.Random(seed)
    return [Decimal(rng.randint(100, 5000)) for _ in range(count)]


def build_pool(ids: list[str], balances: list[Decimal]) -> Any:
    """As seeding fills it: one add per created wallet, the balance parsed from the answer."""
    from wallet_users.load.pool import WalletPool, to_money

    pool = WalletPool(random.Random(2))
    for wallet, balance in zip(ids, balances, strict=True):
        pool.add(wallet, to_money(int(balance)), 0)
    return pool


def build_record(ids: list[str], balances: list[Decimal], operations: int) -> Any:
    """A record of ids' creations and `operations` acknowledged operations per wallet, booked
    as the users book them (sent, then answered); transfers go to the next wallet."""
    from wallet_users.load.pool import to_money
    from wallet_users.record import OK, RunRecord

    record = RunRecord(RUN_ID)
    for wallet, balance in zip(ids, balances, strict=True):
        record.wallet_created(wallet, OK, balance)
    kinds = ("credit", "debit", "transfer")
    count = len(ids)
    rng = random.Random(3)
    for i, wallet in enumerate(ids):
        for n in range(operations):
            kind = kinds[n % 3]
            to_wallet = ids[(i + 1) % count] if kind == "transfer" else None
            amount = to_money(rng.randint(10, 300))  # as the users draw them: a fresh Decimal
            record.operation_sent(kind, wallet, amount, to_wallet)
            record.operation_answered(kind, OK, wallet, amount, to_wallet_id=to_wallet)
    return record


def build_baseline(ids: list[str], balances: list[Decimal]) -> dict[str, tuple[int, int]]:
    return {wallet: (int(balance), 0) for wallet, balance in zip(ids, balances, strict=True)}


# --- memory (in a fresh subprocess per structure) ---------------------------------------------


def _rss() -> int:
    import psutil

    gc.collect()
    return psutil.Process().memory_info().rss


def memory_child(structure: str, wallets: int, operations: int, traced: bool) -> dict[str, Any]:
    """Bytes per wallet of one structure over ids and balances built beforehand."""
    import tracemalloc

    from wallet_users.load import pool as _pool  # noqa: F401 - imported before the measurement
    from wallet_users.record import run_record as _record  # noqa: F401

    before_ids = _rss()
    ids = wallet_ids(wallets)
    balances = initial_balances(wallets)
    ids_bytes = _rss() - before_ids
    if traced:
        tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0] if traced else _rss()
    started = time.perf_counter()
    kept: list[Any] = []
    if structure == "baseline":
        kept.append(build_baseline(ids, balances))
    if structure in ("pool", "both"):
        kept.append(build_pool(ids, balances))
    if structure in ("record", "both"):
        kept.append(build_record(ids, balances, operations))
    seconds = time.perf_counter() - started
    if traced:
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - before
    else:
        grown = _rss() - before
    return {
        "structure": structure,
        "traced": traced,
        "wallets": wallets,
        "bytes": grown,
        "bytes_per_wallet": grown / wallets,
        "ids_and_balances_per_wallet": ids_bytes / wallets,
        "build_seconds": seconds,
    }


# --- messages (one subprocess) ------------------------------------------------------------------


def plain_rows(record: Any) -> list[list[Any]]:
    """The record's numbers per wallet as a plain list: the size baseline for its message."""
    from wallet_users.record import KINDS, OUTCOMES

    rows = []
    for wallet, t in record.wallets.items():
        row: list[Any] = [wallet, OUTCOMES.index(t.created), int(t.initial_balance)]
        for kind in KINDS:
            row += [int(t.ok_sum[kind]), t.ok_count[kind], int(t.maybe_sum[kind])]
            row.append(t.maybe_count[kind])
        row += [t.rejected, t.refused_for_funds, t.replays, t.replay_mismatches]
        rows.append(row)
    return rows


def _timed(function, *args) -> tuple[float, Any]:
    started = time.perf_counter()
    result = function(*args)
    return time.perf_counter() - started, result


class LoopWatch:
    """A greenlet that wakes every millisecond and keeps the longest gap between two wake-ups:
    how long the process's gevent loop was kept from running anything else (heartbeats
    included)."""

    def __init__(self) -> None:
        import gevent

        self.longest = 0.0
        self.running = True
        self.greenlet = gevent.spawn(self._watch)

    def _watch(self) -> None:
        import gevent

        last = time.perf_counter()
        while self.running:
            gevent.sleep(0.001)
            now = time.perf_counter()
            self.longest = max(self.longest, now - last)
            last = now

    def stop(self) -> float:
        self.running = False
        self.greenlet.join()
        return self.longest


def receive_child() -> dict[str, Any]:
    """The master's side in a process of its own: Locust's rpc Server (ROUTER) receives one
    worker's record parts and report; prints its port first, then what it got."""
    from locust.rpc.zmqrpc import Server

    from wallet_users.wiring.distributed import RECORD, RECORD_PART

    server = Server("127.0.0.1", 0)
    print(json.dumps({"port": server.port}), flush=True)
    parts = wallets = 0
    started = None
    try:
        while True:
            _, message = server.recv_from_client()
            started = started or time.perf_counter()
            if message.type == RECORD_PART:
                parts += 1
                wallets += len(message.data["ids"])
            elif message.type == RECORD:
                break
    finally:
        server.close(linger=0)
    return {
        "parts_received": parts,
        "wallets_received": wallets,
        "parts_announced": message.data["parts"],
        "receive_s": time.perf_counter() - started,
    }


def send_through_zmq(report: Any) -> dict[str, Any]:
    """One worker's record, parts then report, from Locust's rpc Client (the worker's DEALER) in
    this process to its Server (the master's ROUTER) in another, on loopback, as the suite's
    worker sends it (pausing for its event loop after each part); meanwhile a LoopWatch says how
    long this process's loop was blocked at most. Its baseline: the same watch over an idle
    second."""
    import gevent
    from locust.rpc.protocol import Message
    from locust.rpc.zmqrpc import Client

    from wallet_users.wiring.distributed import pause_for_heartbeats, send_report

    watch = LoopWatch()
    gevent.sleep(1.0)
    idle = watch.stop()
    receiver = subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), "receive-child"],
        stdout=subprocess.PIPE,
        text=True,
        cwd=PROJECT_ROOT,
    )
    port = json.loads(receiver.stdout.readline())["port"]
    client = Client("127.0.0.1", port, "bench-worker")
    try:
        watch = LoopWatch()
        started = time.perf_counter()
        send_report(
            lambda kind, data: client.send(Message(kind, data, "bench-worker")),
            report,
            pause_for_heartbeats,
        )
        sent = time.perf_counter()
        blocked = watch.stop()
        out, _ = receiver.communicate(timeout=300)
    finally:
        client.close(linger=0)
        if receiver.poll() is None:
            receiver.kill()
            receiver.wait()
    return {
        "send_s": sent - started,  # the worker's side: build, serialise, hand to zmq
        "loop_blocked_max_s": blocked,
        "idle_loop_max_s": idle,
        **json.loads(out.strip().splitlines()[-1]),
    }


def message_child(wallets: int, operations: int, repeats: int) -> dict[str, Any]:
    import msgpack
    from locust.rpc.protocol import Message

    from wallet_users.record import RunRecord
    from wallet_users.wiring.distributed import (
        RECORD_PART,
        Coordinator,
        ShardPlan,
        WorkerReport,
        send_report,
    )

    total = 2 * wallets
    balances = initial_balances(total)
    # two workers' shards, every other wallet of the run as Coordinator.assign deals them
    shards = [wallet_ids(total, start=index, step=2) for index in (0, 1)]
    records = [
        build_record(ids, balances[index::2], operations) for index, ids in enumerate(shards)
    ]
    reports = [WorkerReport(record=r, created=wallets, planned=wallets) for r in records]
    result: dict[str, Any] = {"wallets": wallets, "runs": []}

    rows = plain_rows(records[0])
    baseline_seconds, baseline_bytes = _timed(msgpack.dumps, rows)
    result["baseline_bytes"] = len(baseline_bytes)
    result["baseline_pack_s"] = baseline_seconds
    del rows, baseline_bytes
    baseline_dicts = [dict.fromkeys(ids, (1, 2)) for ids in shards]

    def packed_messages(report: WorkerReport, node: str) -> tuple[list[tuple[str, bytes]], float]:
        """The messages as Locust serialises them, and the longest stretch between two pauses
        (one part built and serialised)."""
        packed: list[tuple[str, bytes]] = []
        longest, last = 0.0, time.perf_counter()

        def pause() -> None:
            nonlocal longest, last
            now = time.perf_counter()
            longest, last = max(longest, now - last), now

        send_report(
            lambda kind, data: packed.append((node, Message(kind, data, node).serialize())),
            report,
            pause,
        )
        return packed, longest

    second, _ = packed_messages(reports[1], "w2")  # the other worker's
    for _ in range(repeats):
        run: dict[str, Any] = {}
        # the worker: build the parts and serialise them as Locust does
        run["worker_s"], (packed, run["longest_part_s"]) = _timed(packed_messages, reports[0], "w1")
        run["message_bytes"] = sum(len(m) for _, m in packed)
        run["parts"] = len(packed) - 1
        run["zmq"] = send_through_zmq(reports[0])
        # the master: both workers' messages in, read and merged as Coordinator does
        gc.collect()
        coordinator = Coordinator(
            shards={"w1": ShardPlan(RUN_ID, 0, 2), "w2": ShardPlan(RUN_ID, 1, 2)}
        )
        started = time.perf_counter()
        incoming = [(node, Message.unserialize(m)) for node, m in packed + second]
        unserialized = time.perf_counter()
        for node, message in incoming:
            if message.type == RECORD_PART:
                coordinator.record_part(node, message.data)
            else:
                coordinator.received(node, message.data)
        read = time.perf_counter()
        merged = RunRecord(RUN_ID)
        for report in coordinator.reports.values():
            merged.merge(report.record)
        done = time.perf_counter()
        if len(merged.wallets) != total:
            raise RuntimeError(f"merged {len(merged.wallets)} wallets, expected {total}")
        run["unserialize_s"] = unserialized - started
        run["from_message_s"] = read - unserialized
        run["merge_s"] = done - read
        del incoming, coordinator, merged, packed
        gc.collect()
        started = time.perf_counter()
        merged_plain: dict[str, Any] = {}
        for d in baseline_dicts:
            merged_plain.update(d)
        run["baseline_update_s"] = time.perf_counter() - started
        del merged_plain
        result["runs"].append(run)
    import psutil

    result["peak_rss_bytes"] = psutil.Process().memory_info().rss  # Linux: current, after all
    return result


# --- a real Locust master and worker ------------------------------------------------------------

LOCUST = Path(sys.executable).with_name("locust")
RECORD_LOCUSTFILE = '''"""A Locust master and one worker exchanging the suite's record message as the suite does: the
worker (its record built at import, before its runner exists) sends its parts and report with
send_report at test_stop; the master waits for it with Coordinator.collect and writes what it got."""

import json
import os
import sys
import time
from types import SimpleNamespace

import gevent
from locust import User, constant, events, task

sys.path[:0] = [os.environ["BENCH_PROJECT_ROOT"], os.environ["BENCH_DIR"]]
from memory_scale import RUN_ID, build_record, initial_balances, wallet_ids  # noqa: E402

from memory_scale import LoopWatch  # noqa: E402

from wallet_users.wiring.distributed import (  # noqa: E402
    FINISH, PLAN, RECORD, RECORD_PART, Coordinator, WorkerReport, pause_for_heartbeats,
    send_report,
)
from wallet_users.wiring.options import AmountRange  # noqa: E402

WALLETS = int(os.environ["BENCH_WALLETS"])
IS_WORKER = "--worker" in sys.argv
RECORD_OF_RUN = None
if IS_WORKER:
    RECORD_OF_RUN = build_record(
        wallet_ids(WALLETS), initial_balances(WALLETS), int(os.environ["BENCH_OPERATIONS"])
    )
# what Coordinator needs of the options: a lost shard's wallets are re-planned (none here)
OPTIONS = SimpleNamespace(
    wallets=0, seed=1, hot_wallets=0, initial_balance=AmountRange(100, 5000),
    resolve_indeterminate=False,
)
coordinator = Coordinator()


class Idle(User):
    wait_time = constant(0.5)

    @task
    def nothing(self):
        pass


@events.init.add_listener
def init(environment, **_):
    runner = environment.runner
    if IS_WORKER:
        runner.register_message(PLAN, lambda **_: None)
        runner.register_message(FINISH, lambda **_: gevent.spawn(runner.stop))
    else:
        runner.register_message(
            RECORD, lambda environment, msg, **_: coordinator.received(msg.node_id, msg.data)
        )
        runner.register_message(
            RECORD_PART,
            lambda environment, msg, **_: coordinator.record_part(msg.node_id, msg.data),
        )


@events.test_start.add_listener
def test_start(environment, **_):
    if not IS_WORKER:
        coordinator.assign(environment.runner, OPTIONS, RUN_ID, False)


@events.test_stopping.add_listener
def test_stopping(environment, **_):
    if not IS_WORKER:
        for client_id in coordinator.shards:
            environment.runner.send_message(FINISH, None, client_id=client_id)


@events.test_stop.add_listener
def test_stop(environment, **_):
    runner = environment.runner
    started = time.perf_counter()
    if IS_WORKER:
        report = WorkerReport(record=RECORD_OF_RUN, created=WALLETS, planned=WALLETS)
        watch = LoopWatch()
        parts = send_report(runner.send_message, report, pause_for_heartbeats)
        sent = time.perf_counter() - started
        blocked = watch.stop()
        print(
            json.dumps({"worker_send_s": sent, "worker_blocked_s": blocked, "parts": parts}),
            flush=True,
        )
        return
    merged, lost = coordinator.collect(runner, 30.0, gevent.sleep)
    result = {
        "collect_s": time.perf_counter() - started,
        "lost_shards": lost,
        "reported": len(coordinator.reports),
        "merged_wallets": len(merged.wallets) - len(merged.unverified),
        "unverified": len(merged.unverified),
    }
    with open(os.environ["BENCH_RESULT"], "w") as out:
        json.dump(result, out)
'''


def through_locust(wallets: int, operations: int, workdir: Path) -> dict[str, Any]:
    """A real `locust --master` and `--worker` on loopback: does the master get the worker's
    record, and does it keep counting the worker alive while the worker builds and sends it?"""
    locustfile = workdir / "record_locustfile.py"
    locustfile.write_text(RECORD_LOCUSTFILE)
    result_path = workdir / "locust-result.json"
    env = {
        **os.environ,
        "BENCH_PROJECT_ROOT": str(PROJECT_ROOT),
        "BENCH_DIR": str(Path(__file__).resolve().parent),
        "BENCH_WALLETS": str(wallets),
        "BENCH_OPERATIONS": str(operations),
        "BENCH_RESULT": str(result_path),
    }
    port = _free_port()
    common = [str(LOCUST), "-f", str(locustfile)]
    with open(workdir / "worker.log", "wb") as worker_log:
        worker = subprocess.Popen(
            [*common, "--worker", "--master-host", "127.0.0.1", "--master-port", str(port)],
            cwd=workdir, env=env, stdout=worker_log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            master = subprocess.run(
                [
                    *common, "--master", "--master-bind-host", "127.0.0.1",
                    "--master-bind-port", str(port), "--headless",
                    "--expect-workers", "1", "--expect-workers-max-wait", "600",
                    "-u", "1", "-r", "1", "-t", "3s", "--only-summary",
                ],
                cwd=workdir, env=env, capture_output=True, text=True, timeout=900,
            )  # fmt: skip
        finally:
            try:
                worker.wait(60)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait()
    log = master.stdout + master.stderr
    (workdir / "master.log").write_text(log)
    if not result_path.exists():
        tail = " | ".join(log.strip().splitlines()[-4:])
        raise RuntimeError(f"the master wrote no result (exit {master.returncode}): {tail}")
    result = json.loads(result_path.read_text())
    result["worker_marked_missing"] = "setting state to missing" in log
    result["master_exit_code"] = master.returncode
    worker_text = (workdir / "worker.log").read_text(errors="replace")
    for line in worker_text.splitlines():
        if line.startswith('{"worker_send_s"'):
            result.update(json.loads(line))
    return result


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- running the children ------------------------------------------------------------------------


def child(arguments: list[str], timeout: float = 900) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), *arguments],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=PROJECT_ROOT,
    )
    if done.returncode != 0:
        tail = " | ".join(done.stderr.strip().splitlines()[-4:])
        raise RuntimeError(f"{' '.join(arguments[:3])}: exit code {done.returncode}: {tail}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _spread(values: list[float]) -> tuple[float, float, float]:
    return (statistics.median(values), min(values), max(values)) if values else (0.0, 0.0, 0.0)


def _trio(values: tuple[float, float, float], fmt: str = "{:,.0f}") -> str:
    median, low, high = values
    return f"{fmt.format(median)} (min {fmt.format(low)}, max {fmt.format(high)})"


def measure(args: argparse.Namespace) -> dict[str, Any]:
    report: dict[str, Any] = {"memory": {}, "problems": [], "load_average": []}
    common = ["--wallets", str(args.wallets), "--operations", str(args.operations)]
    if "memory" in args.only:
        for structure in STRUCTURES:
            runs, traced = [], None
            for index in range(args.repeats + 1):
                report["load_average"].append(os.getloadavg()[0])
                flag = ["--traced"] if index == args.repeats else []
                try:
                    result = child(["memory-child", structure, *common, *flag])
                except (RuntimeError, subprocess.TimeoutExpired, ValueError) as error:
                    report["problems"].append(f"memory {structure}: {error}")
                    break
                if flag:
                    traced = result
                else:
                    runs.append(result)
            report["memory"][structure] = {"rss": runs, "traced": traced}
    if "messages" in args.only:
        report["load_average"].append(os.getloadavg()[0])
        try:
            report["messages"] = child(
                [
                    "message-child",
                    "--wallets",
                    str(args.message_wallets),
                    "--operations",
                    str(args.operations),
                    "--repeats",
                    str(args.repeats),
                ]
            )
        except (RuntimeError, subprocess.TimeoutExpired, ValueError) as error:
            report["problems"].append(f"messages: {error}")
        report["load_average"].append(os.getloadavg()[0])
    if "locust" in args.only:
        import shutil
        import tempfile

        workdir = Path(tempfile.mkdtemp(prefix="memory-scale-"))
        report["load_average"].append(os.getloadavg()[0])
        try:
            report["locust"] = through_locust(args.message_wallets, args.operations, workdir)
        except (RuntimeError, subprocess.TimeoutExpired, ValueError, OSError) as error:
            report["problems"].append(f"locust master and worker: {error}")
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
    return report


def print_report(report: dict[str, Any], args: argparse.Namespace) -> None:
    verdict = "BROKEN" if report["problems"] else "done"
    print(
        f"memory and messages at scale: {verdict}  ({args.wallets:,} wallets in memory,"
        f" {args.operations} operations each; messages of {args.message_wallets:,} wallets;"
        f" {args.repeats} repeats)"
    )
    for problem in report["problems"]:
        print(f"  problem: {problem}")
    memory = report["memory"]

    def per_wallet(structure: str) -> tuple[float, float, float]:
        return _spread([r["bytes_per_wallet"] for r in memory.get(structure, {}).get("rss", [])])

    if memory:
        base = per_wallet("baseline")[0]
        for structure, label in (
            ("baseline", "baseline dict id->(int,int)"),
            ("pool", "WalletPool"),
            ("record", "RunRecord"),
            ("both", "pool + record"),
        ):
            if structure not in memory or not memory[structure]["rss"]:
                continue
            figure = per_wallet(structure)
            traced = memory[structure]["traced"]
            line = f"  {label:<28} {_trio(figure)} bytes/wallet (RSS)"
            if traced:
                line += f", {traced['bytes_per_wallet']:,.0f} traced"
            if structure != "baseline" and base:
                line += f";  {figure[0] / base:.1f}x the baseline"
            if structure == "both":
                mark = "met" if figure[0] < TARGET_BYTES_PER_WALLET else "MISSED"
                line += f"   target < {TARGET_BYTES_PER_WALLET}   {mark}"
            print(line)
        ids = memory.get("both", {}).get("rss") or memory.get("baseline", {}).get("rss")
        if ids:
            print(
                f"  (not counted above: the ids and initial balances themselves,"
                f" {ids[0]['ids_and_balances_per_wallet']:,.0f} bytes/wallet, shared by pool and"
                " record)"
            )
    messages = report.get("messages")
    if messages:
        runs = messages["runs"]
        size = runs[0]["message_bytes"]
        base = messages["baseline_bytes"]
        print(
            f"  record messages, {messages['wallets']:,} wallets: {size / 1e6:,.1f} MB in"
            f" {runs[0]['parts']} parts and a report ({size / messages['wallets']:,.0f}"
            f" bytes/wallet); plain list msgpack {base / 1e6:,.1f} MB; ratio {size / base:.1f}x"
        )
        worker = _spread([r["worker_s"] for r in runs])
        longest = _spread([r["longest_part_s"] * 1000 for r in runs])
        print(
            f"  worker: build + serialise every part {_trio(worker, '{:.2f}')} s; the longest"
            f" part {_trio(longest, '{:.0f}')} ms"
        )
        blocked = _spread([r["zmq"]["loop_blocked_max_s"] * 1000 for r in runs])
        idle = _spread([r["zmq"]["idle_loop_max_s"] * 1000 for r in runs])
        mark = "ok" if blocked[2] < HEARTBEAT_GRACE_SECONDS * 1000 / 3 else "PROBLEM"
        print(
            f"  worker's event loop blocked at most {_trio(blocked, '{:.0f}')} ms while sending"
            f" through Locust's zmq Client; the same watch idle: {_trio(idle, '{:.1f}')} ms;"
            f" heartbeats every 1 s, missing after about {HEARTBEAT_GRACE_SECONDS:.0f} s: {mark}"
        )
        zmq_total = _spread([r["zmq"]["send_s"] for r in runs])
        received = runs[0]["zmq"]
        print(
            f"  sent in {_trio(zmq_total, '{:.2f}')} s; the receiving process got"
            f" {received['parts_received']} of {received['parts_announced']} parts,"
            f" {received['wallets_received']:,} wallets"
        )
        merge = _spread([r["from_message_s"] + r["merge_s"] for r in runs])
        baseline = _spread([r["baseline_update_s"] for r in runs])
        mark = "met" if merge[0] < TARGET_MERGE_SECONDS else "MISSED"
        print(
            f"  master: read the parts (Coordinator) + merge, 2 x {messages['wallets']:,}:"
            f" {_trio(merge, '{:.2f}')} s (parts and reports"
            f" {_spread([r['from_message_s'] for r in runs])[0]:.2f}, merge"
            f" {_spread([r['merge_s'] for r in runs])[0]:.2f}); dict.update of the same size"
            f" {baseline[0]:.3f} s; ratio {merge[0] / baseline[0]:,.1f}x"
            f"   target < {TARGET_MERGE_SECONDS:g} s   {mark}"
        )
        print(
            f"  master: unserialising both workers' messages (Locust, before the suite sees them)"
            f" {_trio(_spread([r['unserialize_s'] for r in runs]), '{:.2f}')} s;"
            f" the measuring process's RSS at the end {messages['peak_rss_bytes'] / 1e9:.1f} GB"
        )
    through = report.get("locust")
    if through:
        whole = through["reported"] == 1 and through["merged_wallets"] == args.message_wallets
        fate = (
            "received and merged"
            if whole
            else "NOT received whole in time: its wallets would be unverified"
        )
        print(
            f"  real locust --master + --worker, {args.message_wallets:,} wallets: the record was"
            f" {fate} ({through['merged_wallets']:,} wallets) after {through['collect_s']:.1f} s"
            f" of the master's collect (waits up to 30 s); the worker sent {through.get('parts', 0)}"
            f" parts in {through.get('worker_send_s', float('nan')):.1f} s, its loop blocked at"
            f" most {through.get('worker_blocked_s', float('nan')) * 1000:.0f} ms; worker marked"
            f" missing for lack of heartbeats: {'YES' if through['worker_marked_missing'] else 'no'}"
        )
    loads = report["load_average"]
    if loads:
        print(
            f"  machine load average (1 min) at the runs' starts: {min(loads):.1f} to {max(loads):.1f}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = OneLineArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command")
    memory_parser = sub.add_parser("memory-child", help="one memory measurement (internal)")
    memory_parser.add_argument("structure", choices=STRUCTURES)
    memory_parser.add_argument("--traced", action="store_true")
    message_parser = sub.add_parser("message-child", help="the message measurements (internal)")
    message_parser.add_argument("--repeats", type=int, default=3)
    sub.add_parser("receive-child", help="the receiving end of the messages (internal)")
    for p in (parser, memory_parser, message_parser):
        p.add_argument("--wallets", type=int, default=1_000_000, help="default 1,000,000")
        p.add_argument("--operations", type=int, default=3, help="per wallet (default 3)")
    parser.add_argument(
        "--message-wallets", type=int, default=500_000, help="one worker's (default 500,000)"
    )
    parser.add_argument("--repeats", type=int, default=3, help="default 3")
    parser.add_argument(
        "--only", default="memory,messages,locust", help="subset of memory,messages,locust"
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    if args.command == "memory-child":
        print(json.dumps(memory_child(args.structure, args.wallets, args.operations, args.traced)))
        return 0
    if args.command == "receive-child":
        print(json.dumps(receive_child()))
        return 0
    if args.command == "message-child":
        print(json.dumps(message_child(args.wallets, args.operations, args.repeats)))
        return 0
    args.only = {w.strip() for w in args.only.split(",") if w.strip()}
    if not args.only or args.only - {"memory", "messages", "locust"}:
        parser.error("--only: a comma-separated subset of memory,messages,locust")
    if args.wallets < 2 or args.message_wallets < 2 or args.repeats < 1 or args.operations < 0:
        parser.error("--wallets and --message-wallets must be at least 2, --repeats at least 1")
    report = measure(args)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_report(report, args)
    return 1 if report["problems"] else 0


if __name__ == "__main__":
    sys.exit(main())
