"""What a run may leave behind: reference processes the embedded target started whose starter is
gone, and the embedded PostgreSQL of this checkout."""

from __future__ import annotations

import psutil

from reference_wallet.postgres import DEFAULT_STATE_DIR

PARENT_ENV = "REFERENCE_WALLET_EXIT_WITH_PARENT"  # set by the target for each part it starts


def orphaned_parts() -> list[str]:
    """Each running process started by an embedded target whose starting process has exited,
    as 'pid cmdline' (its environment as started names the starter)."""
    found = []
    for process in psutil.process_iter(["pid", "cmdline", "status"]):
        if process.info["status"] == psutil.STATUS_ZOMBIE:
            continue
        try:
            starter = process.environ().get(PARENT_ENV)
        except (psutil.AccessDenied, psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
        if starter and starter.isdigit() and not psutil.pid_exists(int(starter)):
            found.append(f"{process.info['pid']} {' '.join(process.info['cmdline'] or [])}")
    return found


def embedded_postmaster() -> int | None:
    """The pid of this checkout's embedded PostgreSQL (.state/pgdata), if it runs."""
    pid_file = DEFAULT_STATE_DIR / "pgdata" / "postmaster.pid"
    try:
        pid = int(pid_file.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return pid if psutil.pid_exists(pid) else None
