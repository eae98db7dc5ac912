"""cardshare's exceptions. A docstring is each one's default message."""

from __future__ import annotations


class CardshareError(Exception):
    """cardshare failed."""

    exit_code = 1

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or "").strip())


class ConfigError(CardshareError):
    """A setting is missing or malformed."""

    exit_code = 2

    def __init__(self, variable: str, reason: str) -> None:
        self.variable = variable
        super().__init__(f"{variable} {reason}")


class InputError(CardshareError):
    """Bad input from the operator."""

    exit_code = 2


class StoreUnavailable(CardshareError):
    """The database is unreachable; try again later."""

    exit_code = 3


class BrokerUnavailable(CardshareError):
    """Redis (the broker) is unreachable; try again later."""

    exit_code = 3


class UnknownChat(InputError):
    """No such chat."""


class SchemaOutOfDate(CardshareError):
    """The database schema is not at the code's revision: run `cardshare db upgrade`."""

    exit_code = 2
