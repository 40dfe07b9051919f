"""CPU time and memory of processes, from /proc (Linux): utime + stime of every thread."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")


def _stat_fields(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after its last ')'.
    return text[text.rfind(")") + 2 :].split()


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of all threads of `pid` so far (0 if it is gone)."""
    fields = _stat_fields(pid)
    if fields is None:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # fields 14 and 15 of proc(5)


def run_seconds(pid: int) -> float:
    """CPU seconds `pid`'s main thread has run so far, to the nanosecond where the kernel keeps
    schedstat (/proc/PID/schedstat's first field), else to the tick from /proc/PID/stat (a
    PostgreSQL backend has one thread); 0 if it is gone."""
    try:
        return int(Path(f"/proc/{pid}/schedstat").read_text().split()[0]) / 1e9
    except (OSError, IndexError, ValueError):
        return cpu_seconds(pid)


def rss_bytes(pid: int) -> int:
    fields = _stat_fields(pid)
    return int(fields[21]) * PAGE_BYTES if fields is not None else 0  # field 24


def pids_named(name: str) -> list[int]:
    """Processes whose command name is `name` (e.g. the PostgreSQL server and its backends)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            comm = (entry / "comm").read_text().strip()
        except OSError:
            continue
        if comm == name:
            found.append(int(entry.name))
    return found


def machine_jiffies() -> tuple[int, int]:
    """(busy, total) jiffies of all cores since boot, from the first line of /proc/stat."""
    first = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    values = [int(v) for v in first]
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    total = sum(values[:8])  # guest time is already counted in user
    return total - idle, total


@dataclass(frozen=True)
class CpuSnapshot:
    """CPU seconds of the processes a measurement watches, taken at one instant."""

    client: float
    server: float
    db: float
    kms: float
    machine_busy: int
    machine_total: int
    db_each: tuple[tuple[int, float], ...] = ()  # the database's processes come and go

    def minus(self, earlier: CpuSnapshot) -> CpuSnapshot:
        # A database backend born in the interval counts whole; one that ended in it is lost.
        before = dict(earlier.db_each)
        db = sum(t - before.get(pid, 0.0) for pid, t in self.db_each)
        return CpuSnapshot(
            self.client - earlier.client,
            self.server - earlier.server,
            db if self.db_each else self.db - earlier.db,
            self.kms - earlier.kms,
            self.machine_busy - earlier.machine_busy,
            self.machine_total - earlier.machine_total,
        )

    @property
    def machine_utilization(self) -> float:
        """Share of all cores busy over the interval (0..1)."""
        return self.machine_busy / self.machine_total if self.machine_total else 0.0


def snapshot(server_pids: tuple[int, ...], db_name: str | None, kms_pid: int) -> CpuSnapshot:
    busy, total = machine_jiffies()
    own = os.times()
    db_each = tuple((p, cpu_seconds(p)) for p in pids_named(db_name)) if db_name else ()
    return CpuSnapshot(
        client=own.user + own.system,
        server=sum(cpu_seconds(p) for p in server_pids),
        db=sum(t for _, t in db_each),
        kms=cpu_seconds(kms_pid) if kms_pid else 0.0,
        machine_busy=busy,
        machine_total=total,
        db_each=db_each,
    )


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (children, grandchildren...)."""
    parent_of: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat_fields(int(entry.name))
            if fields is not None:
                parent_of[int(entry.name)] = int(fields[1])  # field 4: ppid
    found: list[int] = []
    frontier = [pid]
    while frontier:
        p = frontier.pop()
        kids = [c for c, pp in parent_of.items() if pp == p]
        found.extend(kids)
        frontier.extend(kids)
    return found
