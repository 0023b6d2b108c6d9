"""Locust entry point: the wallet suite's user classes and its event hooks. Run `locust` here."""

from wallet_users import hooks  # noqa: F401 - registers the suite's event listeners
from wallet_users.load.users import HotWalletUser, ReadYourWritesUser, WalletUser

__all__ = ["HotWalletUser", "ReadYourWritesUser", "WalletUser"]
