"""The run record: what the run sent and how each operation ended (`run_record`), and how the
run names the wallets and keys it creates (`ids`)."""

from .run_record import INDETERMINATE, KINDS, OK, OUTCOMES, REJECTED, RunRecord, WalletTally

__all__ = ["INDETERMINATE", "KINDS", "OK", "OUTCOMES", "REJECTED", "RunRecord", "WalletTally"]
