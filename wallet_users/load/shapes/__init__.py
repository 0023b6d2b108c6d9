"""Load shapes, each its own locustfile so that a conf profile selects one with
`locustfile = locustfile.py,wallet_users/shapes/<shape>.py`. They take their peak from --users,
their rate from --spawn-rate and their length from --run-time."""
