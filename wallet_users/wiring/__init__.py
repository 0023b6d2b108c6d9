"""The run's wiring: options, the role of each Locust process, distributed messages, the
thresholds, the outcome and its reports, and the target under load."""
