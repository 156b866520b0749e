"""The ``rc`` operator command line and its reusable broker client (:class:`rc_cli.client.AdminClient`)."""

from rc_cli.client import AdminClient, AdminClientError, Refused

__all__ = ["AdminClient", "AdminClientError", "Refused"]
