"""The load: the user classes, one operation's round trip, the wallet pool, seeding, the load
shapes, and the per-process state the users read (`run.SuiteRun`)."""
