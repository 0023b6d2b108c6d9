"""The suite's table of Locust event listeners. Importing this module registers them
(locustfile.py does); at `init` it chooses this process's role once (local, master or worker,
see wiring/roles/) and forwards every later event to it."""

from __future__ import annotations

from typing import Any

from locust import events

from .wiring import options as suite_options
from .wiring.roles import choose_role


@events.init_command_line_parser.add_listener
def _register_options(parser: Any, **_: Any) -> None:
    suite_options.register(parser)


@events.init.add_listener
def _on_init(environment: Any, **_: Any) -> None:
    role = choose_role(environment)
    environment.wallet_suite_role = role
    hooks = environment.events
    hooks.test_start.add_listener(lambda **_: role.test_start())
    hooks.test_stopping.add_listener(lambda **_: role.test_stopping())
    hooks.test_stop.add_listener(lambda **_: role.test_stop())
    hooks.quitting.add_listener(lambda **_: role.quitting())
    hooks.quit.add_listener(lambda exit_code, **_: role.quit(exit_code))
    role.init()
