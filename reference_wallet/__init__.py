"""The reference implementation of the Wallex wallet service contract (shared/wallet-api-contract.md):
the suite's default target, on embedded PostgreSQL, with fault switches that break it on purpose."""
