"""The wallet load-test suite: user classes, the wallet pool, seeding, the run record, the
thresholds and the consistency check, wired into Locust by `hooks`."""
