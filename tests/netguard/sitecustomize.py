"""Loaded by every Python process the tests start (it is on their PYTHONPATH): refuses network connections to
anything but this machine, so no test can reach the network, even through Snakemake, DVC or papermill."""

import ipaddress
import socket

_connect = socket.socket.connect
_connect_ex = socket.socket.connect_ex


def _allowed(address) -> bool:
    if not isinstance(address, tuple):  # AF_UNIX paths
        return True
    host = address[0]
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _guarded_connect(self, address):
    if not _allowed(address):
        raise ConnectionRefusedError(f"network access blocked in tests: {address!r}")
    return _connect(self, address)


def _guarded_connect_ex(self, address):
    if not _allowed(address):
        raise ConnectionRefusedError(f"network access blocked in tests: {address!r}")
    return _connect_ex(self, address)


socket.socket.connect = _guarded_connect
socket.socket.connect_ex = _guarded_connect_ex
