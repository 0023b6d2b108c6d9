"""The state of one load-generating process during a run: its options, wallet pools and run
record. The hooks create it; the user classes read it through `suite_run(environment)`."""

from __future__ import annotations

import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..record import RunRecord
from ..record.history import AckHistory
from ..wiring.options import SuiteOptions
from .arrival import ArrivalCounts, ArrivalShare
from .pool import WalletPool
from .seeding import SeedResult

if TYPE_CHECKING:
    from ..wiring.distributed import ShardPlan
    from .operations import InDoubt


@dataclass
class FaultWindow:
    """Whether the nemesis has a fault on in this process, and when the last one was over
    (perf_counter): a read-your-writes wait counts its --visibility-timeout from then, since a
    stopped projector cannot show a write."""

    active: int = 0
    over_at: float = 0.0

    def begin(self) -> None:
        self.active += 1

    def end(self) -> None:
        self.active = max(0, self.active - 1)
        self.over_at = time.perf_counter()

    def quiet_since(self) -> float:
        return time.perf_counter() if self.active else self.over_at


@dataclass
class SuiteRun:
    options: SuiteOptions
    record: RunRecord
    rng: random.Random
    wallets: WalletPool  # the WalletUser's wallets: exact bookkeeping
    hot_wallets: WalletPool  # fought over by HotWalletUsers: refusals expected
    seeding: dict[str, SeedResult] = field(default_factory=dict)
    shard: ShardPlan | None = None
    in_doubt: dict[str, InDoubt] = field(default_factory=dict)  # key -> operation, process-wide
    arrival: ArrivalCounts = field(default_factory=ArrivalCounts)  # open model's tallies
    arrival_share: ArrivalShare | None = None  # each pacing user's share; None: closed model
    # the acknowledged snapshots, spilled under the run's report folder for long runs
    history: AckHistory = field(default_factory=AckHistory)
    faults: FaultWindow = field(default_factory=FaultWindow)  # --nemesis, on this process
    ready: bool = False

    @classmethod
    def start(cls, options: SuiteOptions) -> SuiteRun:
        rng = random.Random(options.seed)
        spill = Path(options.report_dir) / options.run_id / f"history-{os.getpid()}.part"
        return cls(
            options=options,
            record=RunRecord(options.run_id),
            rng=rng,
            wallets=WalletPool(random.Random(rng.random())),
            hot_wallets=WalletPool(random.Random(rng.random())),
            history=AckHistory(spill),
        )

    def user_rng(self) -> random.Random:
        """A generator for one user, derived from the run's seed (reproducible mixes)."""
        return random.Random(self.rng.random())


_ATTRIBUTE = "wallet_suite_run"


def suite_run(environment: Any) -> SuiteRun:
    run = getattr(environment, _ATTRIBUTE, None)
    if run is None:
        raise RuntimeError(
            "the wallet suite's test_start hook has not run (is locustfile.py used?)"
        )
    return run


def set_suite_run(environment: Any, run: SuiteRun | None) -> None:
    setattr(environment, _ATTRIBUTE, run)
