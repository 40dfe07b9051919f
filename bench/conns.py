"""Which server process holds a TCP connection, from /proc (loopback only).

With SO_REUSEPORT the kernel hands each new connection to one of the listening processes by a
hash: a handful of connections can easily land 6 to 2. The load generator opens connections
until every serving process holds the same number, so that runs compare with each other.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def _sockets(pid: int | str) -> set[int]:
    inodes: set[int] = set()
    fd_dir = Path(f"/proc/{pid}/fd")
    with contextlib.suppress(OSError):
        for fd in fd_dir.iterdir():
            with contextlib.suppress(OSError):
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(int(target[8:-1]))
    return inodes


def own_sockets() -> set[int]:
    return _sockets("self")


def tcp_ports() -> dict[int, tuple[int, int]]:
    """Socket inode -> (local port, remote port) of every TCP socket of this network namespace."""
    table: dict[int, tuple[int, int]] = {}
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(name).read_text().splitlines()[1:]:
                parts = line.split()
                local, remote, inode = parts[1], parts[2], int(parts[9])
                table[inode] = (int(local.rsplit(":", 1)[1], 16), int(remote.rsplit(":", 1)[1], 16))
    return table


def server_of(new_sockets: set[int], server_pids: tuple[int, ...]) -> int | None:
    """The server process holding the other end of one of `new_sockets` (ours), if found."""
    ports = tcp_ports()
    ours = {ports[i] for i in new_sockets if i in ports}
    if not ours:
        return None
    for pid in server_pids:
        for inode in _sockets(pid):
            local_remote = ports.get(inode)
            if local_remote is not None and (local_remote[1], local_remote[0]) in ours:
                return pid
    return None
