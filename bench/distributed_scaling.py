"""Whether the suite's load scales with Locust worker processes: requests per second of a master
with one worker against a master with two, each worker pinned to a core of its own, all running the
suite's WalletUser against the canned-answer server of bench/locust_throughput.py.

    .venv/bin/python bench/distributed_scaling.py [--seconds 15] [--repeats 3] [--json]

Where things run (this machine has two cores):
- one worker: worker on core 0; master and canned server on core 1;
- two workers: workers on cores 0 and 1; master and canned server unpinned, taking what CPU the
  workers leave them.
So with two workers nothing has a core to itself: the script measures the CPU each part used and
prints, beside the plain ratio, requests per worker CPU-second (does each worker do as much work per
CPU second as a lone one?) and what the canned server cost, to say whether it was the bottleneck.

A printed figure, not a pass/fail test: the target is shown beside the figure. The exit code is
non-zero only when something broke (a process failed, a run sent nothing).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from locust_throughput import (
    LOCUST,
    PROJECT_ROOT,
    SUITE_USER_NAMES,
    CannedServer,
    CpuTimeline,
    locust_per_second,
    steady_window,
    suite_load_args,
)

TARGET_RATIO = 1.8
# workers' cores, master's core and server's core per layout ("" = not pinned)
LAYOUTS = {
    1: {"workers": ["0"], "master": "1", "server": "1"},
    2: {"workers": ["0", "1"], "master": "", "server": ""},
}


@dataclass
class ScalingRun:
    workers: int
    rps: float = 0.0  # the master's merged count, steady seconds only
    server_rps: float = 0.0
    window: tuple[int, int] = (0, 0)
    worker_cores: list[float] = field(default_factory=list)
    master_cores: float = 0.0
    server_cores: float = 0.0
    core_busy: list[float] = field(default_factory=list)
    load_average: float = 0.0
    problems: list[str] = field(default_factory=list)

    @property
    def per_worker_cpu_second(self) -> float:
        busy = sum(self.worker_cores)
        return self.rps / busy if busy else 0.0

    @property
    def server_per_cpu_second(self) -> float:
        return self.server_rps / self.server_cores if self.server_cores else 0.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _pinned(core: str, command: list[str]) -> list[str]:
    return ["taskset", "-c", core, *command] if core else command


def run_distributed(
    args: argparse.Namespace, workers: int, workdir: Path, index: int
) -> ScalingRun:
    layout = LAYOUTS[workers]
    run = ScalingRun(workers, load_average=os.getloadavg()[0])
    server = CannedServer(core=layout["server"]).start()
    port = free_port()
    stats = workdir / f"w{workers}-{index}"
    master_command = [
        str(LOCUST),
        "-f",
        "locustfile.py",
        "WalletUser",
        "--master",
        "--master-bind-host",
        "127.0.0.1",
        "--master-bind-port",
        str(port),
        "--expect-workers",
        str(workers),
        *suite_load_args(
            server.url, args.users_per_worker * workers, args.seconds, args.wallets, workdir, stats
        ),
    ]
    worker_command = [
        str(LOCUST),
        "-f",
        "locustfile.py",
        "--worker",
        "--master-host",
        "127.0.0.1",
        "--master-port",
        str(port),
    ]
    logs = []
    processes: dict[str, subprocess.Popen] = {}
    try:
        for name, command, core in [
            ("master", master_command, layout["master"]),
            *[(f"worker{i + 1}", worker_command, c) for i, c in enumerate(layout["workers"])],
        ]:
            log = open(workdir / f"w{workers}-{index}-{name}.log", "wb")  # noqa: SIM115
            logs.append(log)
            processes[name] = subprocess.Popen(
                _pinned(core, command), cwd=PROJECT_ROOT, stdout=log, stderr=subprocess.STDOUT
            )
        timeline = CpuTimeline(
            {**{n: p.pid for n, p in processes.items()}, "server": server.process.pid}
        ).start()
        try:
            master_code = processes["master"].wait(args.seconds + 90)
            deadline = time.monotonic() + 30
            worker_codes = []
            for name, process in processes.items():
                if name != "master":
                    worker_codes.append(process.wait(max(1.0, deadline - time.monotonic())))
        except subprocess.TimeoutExpired:
            master_code, worker_codes = None, []
            run.problems.append(f"{workers} workers: still running after the deadline, killed")
        finally:
            timeline.stop()
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.kill()
                process.wait()
        for log in logs:
            log.close()
        counts = server.stop()
    if master_code not in (0, None):
        tail = (workdir / f"w{workers}-{index}-master.log").read_text(errors="replace")
        run.problems.append(
            f"{workers} workers: master exit code {master_code}: "
            + " | ".join(tail.strip().splitlines()[-5:])
        )
    if any(code != 0 for code in worker_codes):
        run.problems.append(f"{workers} workers: worker exit codes {worker_codes}")
    try:
        per_second = locust_per_second(stats.with_suffix(".json"), SUITE_USER_NAMES)
    except (OSError, ValueError, KeyError) as error:
        run.problems.append(f"{workers} workers: no stats from the master: {error}")
        return run
    window = steady_window(per_second)
    if window is None:
        run.problems.append(f"{workers} workers: too few seconds with requests")
        return run
    first, end, requests = window
    span = end - first
    run.window = (first, end)
    run.rps = requests / span
    run.server_rps = sum(counts.get(s, 0) for s in range(first, end)) / span
    trees, cores = timeline.cores_busy(first, end)
    run.worker_cores = [trees[n] for n in processes if n != "master"]
    run.master_cores = trees["master"]
    run.server_cores = trees["server"]
    run.core_busy = cores
    return run


def _trio(values: list[float]) -> tuple[float, float, float]:
    return (statistics.median(values), min(values), max(values)) if values else (0.0, 0.0, 0.0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=int, default=15, help="each run's length (default 15)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per layout (default 3)")
    parser.add_argument(
        "--users-per-worker", type=int, default=50, help="Locust users per worker (default 50)"
    )
    parser.add_argument("--wallets", type=int, default=100, help="wallets (default 100)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)

    workdir = Path(tempfile.mkdtemp(prefix="distributed-scaling-"))
    runs: dict[int, list[ScalingRun]] = {1: [], 2: []}
    try:
        for index in range(args.repeats):
            for workers in runs:  # alternate, so that a noisy minute hits both layouts
                runs[workers].append(run_distributed(args, workers, workdir, index))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    problems = [p for rs in runs.values() for r in rs for p in r.problems]
    good = {w: [r for r in rs if not r.problems] for w, rs in runs.items()}
    pairs = list(zip(runs[1], runs[2], strict=False))
    ratios = [b.rps / a.rps for a, b in pairs if not a.problems and not b.problems and a.rps]
    efficiency = [
        b.per_worker_cpu_second / a.per_worker_cpu_second
        for a, b in pairs
        if not a.problems and not b.problems and a.per_worker_cpu_second
    ]
    report: dict[str, Any] = {
        "ok": not problems,
        "problems": problems,
        "layouts": LAYOUTS,
        "rps": {w: _trio([r.rps for r in rs]) for w, rs in good.items()},
        "ratio": _trio(ratios),
        "target": TARGET_RATIO,
        "met": bool(ratios) and statistics.median(ratios) >= TARGET_RATIO,
        "per_worker_cpu_second": {
            w: _trio([r.per_worker_cpu_second for r in rs]) for w, rs in good.items()
        },
        "efficiency_ratio": _trio(efficiency),
        "runs": {w: [{**asdict(r)} for r in rs] for w, rs in runs.items()},
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return 1 if problems else 0

    verdict = "BROKEN" if problems else "done"
    print(
        f"distributed scaling: {verdict}  (suite WalletUser, {args.users_per_worker} users per"
        f" worker, {args.seconds} s runs, {args.repeats} repeats, {os.cpu_count()} cores)"
    )
    for problem in problems:
        print(f"  problem: {problem}")
    for workers, rs in good.items():
        if not rs:
            continue
        median, low, high = report["rps"][workers]
        layout = LAYOUTS[workers]
        cpu = statistics.median(sum(r.worker_cores) for r in rs)
        print(
            f"  {workers} worker{'s' if workers > 1 else ' '}  {median:7,.0f} req/s (min {low:,.0f},"
            f" max {high:,.0f});  workers {cpu:.2f} cores"
            f" ({statistics.median(r.per_worker_cpu_second for r in rs):,.0f} req per worker CPU-s),"
            f" master {statistics.median(r.master_cores for r in rs):.2f},"
            f" server {statistics.median(r.server_cores for r in rs):.2f} cores"
            f" ({statistics.median(r.server_per_cpu_second for r in rs):,.0f} req per server CPU-s);"
            f" workers on cores {','.join(layout['workers'])},"
            f" master/server on {layout['master'] or 'any'}"
        )
    if ratios:
        median, low, high = report["ratio"]
        print(
            f"  ratio 2/1 workers   {median:.2f} (min {low:.2f}, max {high:.2f})   target >="
            f" {TARGET_RATIO}   {'met' if report['met'] else 'MISSED'}"
        )
        median, low, high = report["efficiency_ratio"]
        print(
            f"  per worker CPU-s    {median:.2f} (min {low:.2f}, max {high:.2f})   (2 workers"
            " against 1: 1.0 means each worker does as much per CPU second as a lone one)"
        )
    loads = [r.load_average for rs in runs.values() for r in rs]
    if loads:
        print(
            f"  machine load average (1 min) at the runs' starts: {min(loads):.1f} to {max(loads):.1f}"
        )
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
