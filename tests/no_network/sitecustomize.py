"""Loaded by the no-network test through PYTHONPATH: any attempt to open a network connection fails loudly."""
import socket

_real_connect = socket.socket.connect


def _refuse(self, address):
    if self.family == socket.AF_UNIX:
        return _real_connect(self, address)
    raise OSError(f"kerasls test: network access attempted to {address!r}")


socket.socket.connect = _refuse
socket.socket.connect_ex = lambda self, address: _refuse(self, address)
socket.create_connection = lambda address, *args, **kwargs: (_ for _ in ()).throw(
    OSError(f"kerasls test: network access attempted to {address!r}"))
socket.getaddrinfo = lambda host, *args, **kwargs: (_ for _ in ()).throw(
    OSError(f"kerasls test: DNS lookup attempted for {host!r}"))
