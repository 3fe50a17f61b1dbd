# Hostile: reach the network at import and from RMSNorm.forward (a socket per family, a connection
# to a local listener the test opened, HOSTILE["port"]), print what worked, and raise in forward
# when anything did, so a network the worker can reach costs the submission its rmsnorm points.
import functools as _functools
import socket as _socket


def _try_network(where):
    opened = []
    for _name in ("AF_INET", "AF_INET6", "AF_NETLINK", "AF_PACKET"):
        _kind = _socket.SOCK_RAW if _name in ("AF_NETLINK", "AF_PACKET") else _socket.SOCK_STREAM
        try:
            _socket.socket(getattr(_socket, _name), _kind).close()
            opened.append(_name)
        except OSError as _error:
            print(f"NETWORK-REFUSED {where} {_name}: {_error}")
    try:
        _socket.create_connection(("127.0.0.1", HOSTILE["port"]), timeout=2).close()
        opened.append("connection")
    except OSError as _error:
        print(f"NETWORK-REFUSED {where} connection: {_error}")
    if opened:
        print(f"NETWORK-OPEN {where} {opened}")
    return opened


_OPENED_AT_IMPORT = _try_network("import")
_honest_forward = RMSNorm.forward


@_functools.wraps(_honest_forward)
def _networking_forward(self, x):
    opened = _OPENED_AT_IMPORT + _try_network("forward")
    if opened:
        raise ConnectionError(f"reached the network: {opened}")
    return _honest_forward(self, x)


RMSNorm.forward = _networking_forward
