"""Errors the user caused and can fix: shown as one clear line, never a traceback."""


class UserError(Exception):
    """Bad input or configuration; the message names the problem and how to fix it (CLI exit 2)."""

    exit_code = 2


class ServiceUnavailable(UserError):
    """A service the command needs is not reachable (CLI exit 1)."""

    exit_code = 1


class PortInUse(UserError):
    """A port a service wants is taken by another process."""

    exit_code = 1

    def __init__(self, host: str, port: int, env: str) -> None:
        super().__init__(
            f"port {port} on {host} is already in use; stop the other process or set {env} "
            "to a free port"
        )
        self.host, self.port, self.env = host, port, env
