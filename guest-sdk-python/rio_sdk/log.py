"""Logging into the silo's log, tagged with this object's identity."""

from wit_world.imports import log as _host


def trace(message: str) -> None:
    _host.write(_host.Level.TRACE, str(message))


def debug(message: str) -> None:
    _host.write(_host.Level.DEBUG, str(message))


def info(message: str) -> None:
    _host.write(_host.Level.INFO, str(message))


def warn(message: str) -> None:
    _host.write(_host.Level.WARN, str(message))


def error(message: str) -> None:
    _host.write(_host.Level.ERROR, str(message))
