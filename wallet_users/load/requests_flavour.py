"""A second locustfile offering `RequestsWalletUser` (WalletUser on `requests`' HttpUser):
`locust -f locustfile.py,wallet_users/load/requests_flavour.py RequestsWalletUser`."""

from wallet_users.load.users import RequestsWalletUser

__all__ = ["RequestsWalletUser"]
