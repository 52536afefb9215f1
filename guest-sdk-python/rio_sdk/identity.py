"""Who this instance is: its service type and object id."""

from wit_world.imports import identity as _host


def service_type() -> str:
    return _host.current().service_type


def object_id() -> str:
    return _host.current().object_id
