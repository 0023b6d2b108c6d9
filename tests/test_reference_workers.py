"""`python -m reference_wallet --workers N`: several HTTP processes on one port, one lifecycle."""

from __future__ import annotations

import json
import os
import signal
import urllib.request

import psutil
from polling import wait_until


def _credit(url: str, wallet_id: str) -> int:
    request = urllib.request.Request(
        f"{url}/wallets/{wallet_id}/credit",
        data=json.dumps({"amount": 5}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.status


def _children(pid: int) -> list[psutil.Process]:
    return psutil.Process(pid).children(recursive=False)


def test_workers_share_the_port_and_all_stop_on_sigterm(reference_wallet):
    service = reference_wallet(extra_args=["--workers", "2"])
    request = urllib.request.Request(
        f"{service.url}/wallets",
        data=json.dumps({"walletId": "wk-1", "ownerId": "o", "initialBalance": 10}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 201
    assert all(_credit(service.url, "wk-1") == 201 for _ in range(20))
    workers = _children(service.process.pid)
    assert len(workers) == 1, "one forked worker beside the first process"
    assert service.stop() == 0
    wait_until(
        lambda: not any(w.is_running() and w.status() != psutil.STATUS_ZOMBIE for w in workers),
        10,
        "the worker to exit",
    )


def test_a_killed_worker_takes_the_whole_service_down(reference_wallet):
    service = reference_wallet(extra_args=["--workers", "2"])
    (worker,) = _children(service.process.pid)
    os.kill(worker.pid, signal.SIGKILL)
    wait_until(lambda: service.process.poll() is not None, 15, "the service to exit")
    assert service.process.returncode == 1
