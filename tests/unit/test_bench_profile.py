"""bench.stacks and bench.profile: reading py-spy's collapsed stacks, the phases of a call,
the CPU budget per call, the top tables and the flame graph, on made-up samples (no server,
no profiler, no clock)."""

from __future__ import annotations

import json
import math
import os
import threading
import time
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

import pytest

from bench import profile, report, stacks
from bench.cli import _parser, options_from
from bench.stacks import OTHER, OUTSIDE, PHASE_NAMES, Stack

SITE = "/work/main/.venv/lib/python3.11/site-packages"
LIB = "/usr/lib/python3.11"
ROOT = str(stacks.ROOT)

AUDIT = "audit append (with Merkle hashing)"
DATABASE = "database"
PROTOBUF = "protobuf conversion"


def _raw(*frames: str) -> str:
    return ";".join(frames)


WORKER = f"_worker ({LIB}/concurrent/futures/thread.py:83)"
SERVICER = f"TokenServicer.detokenize ({ROOT}/vault/transport/token_servicer.py:115)"
DETOK = f"Detokenization.detokenize ({ROOT}/vault/domain/detokenization.py:120)"
LOOKUP = f"SqlValueStore.lookup ({ROOT}/vault/storage/sql/values.py:40)"
EXECUTE = f"DefaultDialect.do_execute ({SITE}/sqlalchemy/engine/default.py:951)"
AUDIT_APPEND = f"SqlAuditLog.append ({ROOT}/vault/storage/sql/audit.py:77)"
RESULT_OUT = f"_result_out ({ROOT}/vault/transport/token_servicer.py:48)"


def _sample_lines() -> list[str]:
    return [
        f"{_raw(WORKER, SERVICER, DETOK, LOOKUP, EXECUTE)} 30",
        # the same function at another line: one name once the line is dropped
        f"{_raw(WORKER, SERVICER, DETOK, LOOKUP, EXECUTE.replace(':951', ':960'))} 10",
        f"{_raw(WORKER, SERVICER, DETOK, AUDIT_APPEND, EXECUTE)} 40",
        f"{_raw(WORKER, SERVICER, RESULT_OUT)} 15",
        f"{_raw(WORKER, 'mystery (<string>:1)')} 5",
        "",
        "not a sample line",
    ]


def test_collapsed_stacks_are_read_with_short_names_and_lines_merged() -> None:
    got = stacks.parse_collapsed(_sample_lines())
    assert sum(got.values()) == 100
    lookup: Stack = (
        "_worker (concurrent/futures/thread.py)",
        "TokenServicer.detokenize (vault/transport/token_servicer.py)",
        "Detokenization.detokenize (vault/domain/detokenization.py)",
        "SqlValueStore.lookup (vault/storage/sql/values.py)",
        "DefaultDialect.do_execute (sqlalchemy/engine/default.py)",
    )
    assert got[lookup] == 40


def test_collapsed_stacks_round_trip_through_the_file(tmp_path: os.PathLike[str]) -> None:
    got = stacks.parse_collapsed(_sample_lines())
    path = Path(tmp_path) / "profile.collapsed"
    stacks.write_collapsed(got, path)
    assert stacks.parse_collapsed(path.read_text().splitlines()) == got


@pytest.mark.parametrize(
    ("frames", "phase"),
    [
        ((WORKER, SERVICER, DETOK, LOOKUP, EXECUTE), DATABASE),
        # the audit's own SQL is the audit's, not a database read
        ((WORKER, SERVICER, DETOK, AUDIT_APPEND, EXECUTE), AUDIT),
        ((WORKER, SERVICER, RESULT_OUT), PROTOBUF),
        # a tokenize's audit entries, written in its values' transaction
        (
            (LOOKUP, f"insert_audit ({ROOT}/vault/storage/sql/rows.py:227)", EXECUTE),
            AUDIT,
        ),
        ((WORKER, "mystery (<string>:1)"), OTHER),
        (
            (WORKER, f"ItemQuotas.take ({ROOT}/vault/domain/quotas.py:195)", EXECUTE),
            "quota check",
        ),
        ((WORKER, f"AESGCM.decrypt ({SITE}/cryptography/x.py:1)"), "decryption and encryption"),
        ((f"Gate.authenticate ({ROOT}/vault/transport/rpc.py:202)",), "authentication"),
        ((f"Handle._run ({LIB}/asyncio/events.py:84)",), "gRPC, asyncio, thread hand-offs"),
    ],
)
def test_each_sample_belongs_to_one_phase(frames: tuple[str, ...], phase: str) -> None:
    (stack,) = stacks.parse_collapsed([f"{_raw(*frames)} 1"])
    assert stacks.phase_of(stack) == phase


def test_the_budget_turns_samples_into_microseconds_per_call() -> None:
    got = stacks.parse_collapsed(_sample_lines())
    # 200 Hz, 100 calls: one sample is 1/200 s over 100 calls = 50 µs per call.
    b = stacks.budget(got, rate=200, calls=100, process_cpu_s=0.6, threads_s={"python": 0.6})
    assert b.phases[DATABASE] == pytest.approx(40 * 50)
    assert b.phases[AUDIT] == pytest.approx(40 * 50)
    assert b.phases[PROTOBUF] == pytest.approx(15 * 50)
    assert b.phases[OTHER] == pytest.approx(5 * 50)
    assert set(PHASE_NAMES) <= set(b.phases)
    # /proc says 0.6 s over 100 calls = 6,000 µs per call; the samples account for 5,000.
    assert b.process_cpu_us == pytest.approx(6000)
    assert b.phases[OUTSIDE] == pytest.approx(1000)
    assert b.threads == {"python": pytest.approx(6000)}
    ((name, us),) = b.other_top
    assert name == "mystery (<string>)"
    assert us == pytest.approx(250)


def test_without_process_cpu_nothing_is_claimed_outside_the_samples() -> None:
    b = stacks.budget(stacks.parse_collapsed(_sample_lines()), rate=100, calls=10)
    assert OUTSIDE not in b.phases
    assert math.isnan(b.process_cpu_us)
    assert math.isnan(stacks.budget(Counter(), rate=100, calls=0).phases[OTHER])


def test_the_budget_survives_the_json_and_is_printed_whole(tmp_path: os.PathLike[str]) -> None:
    b = stacks.budget(stacks.parse_collapsed(_sample_lines()), 200, 100, 0.6, {"python": 0.6})
    path = Path(tmp_path) / "run.json"
    report.write_json({"budget": b.as_dict()}, path)
    again = stacks.budget_from_dict(json.loads(path.read_text())["budget"])
    assert again.phases == pytest.approx(b.phases)
    text = stacks.render_budget(again, "sqlite detokenize_1", noop_cpu_us=900.0)
    for name in (*PHASE_NAMES, OTHER, OUTSIDE, "python", "mystery (<string>)", "gap 5,100 us"):
        assert name in text


def test_top_tables_order_by_own_and_by_cumulative_time() -> None:
    got = stacks.parse_collapsed(_sample_lines())
    times = {f.name: f for f in stacks.function_times(got)}
    execute = "DefaultDialect.do_execute (sqlalchemy/engine/default.py)"
    assert (times[execute].own, times[execute].cumulative) == (80, 80)
    worker = "_worker (concurrent/futures/thread.py)"
    assert (times[worker].own, times[worker].cumulative) == (0, 100)
    table = stacks.top_table(got, n=2, per_call_us=50.0)
    own, cumulative = table.split("cumulative time")
    assert execute in own.splitlines()[2]  # first row under the header
    assert worker in cumulative.splitlines()[2]
    assert "4000.0" in own  # 80 samples x 50 µs


def test_the_flame_graph_is_one_valid_svg_with_every_frame_escaped() -> None:
    got = stacks.parse_collapsed(_sample_lines())
    svg = stacks.flame_svg(got, title="a <title> & more")
    root = ET.fromstring(svg)  # noqa: S314  (our own output)
    assert root.tag.endswith("svg")
    ns = "{http://www.w3.org/2000/svg}"
    tips = [t.text or "" for t in root.iter(f"{ns}title")]
    assert any(t.startswith("mystery (<string>)") for t in tips)
    assert any(t.startswith("_worker (concurrent/futures/thread.py): 100 samples") for t in tips)
    # the background, then one per node of the call tree: _worker, the servicer, the use case,
    # lookup and its execute, the audit and its execute, _result_out, mystery
    assert len(root.findall(f".//{ns}rect")) == 1 + 9


def test_thread_cpu_is_read_per_thread_and_summed_by_name() -> None:
    mine = stacks.thread_cpu([os.getpid()])
    assert (os.getpid(), os.getpid()) in mine  # the main thread's id is the pid
    before = {(1, 1): ("python", 1.0), (1, 2): ("grpc_global_tim", 0.5)}
    after = {(1, 1): ("python", 1.5), (1, 2): ("grpc_global_tim", 0.5), (1, 3): ("python", 0.25)}
    assert stacks.thread_cpu_by_name(before, after) == {"python": 0.75}


def test_the_harness_flag_reaches_its_option() -> None:
    assert options_from(_parser().parse_args(["--budget"])).budget is True
    assert options_from(_parser().parse_args([])).budget is False


def test_profile_refuses_an_unknown_workload_with_one_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert profile.main(["--workload", "nope"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "--workload must be one of" in err
    assert profile.main(["--seconds", "0"]) == 2


def test_a_recorded_profile_is_read_again_without_a_server(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stacks.write_collapsed(stacks.parse_collapsed(_sample_lines()), tmp_path / "profile.collapsed")
    old = stacks.budget(Counter(), 200, 100, 0.6, {"python": 0.6})
    about = {"title": "t", "workload": "detokenize_1", "seconds": 1, "requests_per_s": 100}
    (tmp_path / "budget.json").write_text(json.dumps({**about, "budget": old.as_dict()}))
    assert profile.main(["--from", str(tmp_path)]) == 0
    again = json.loads((tmp_path / "budget.json").read_text())
    assert again["budget"]["us_per_call"][DATABASE] == pytest.approx(40 * 50)
    assert again["budget"]["process_cpu_us_per_call"] == pytest.approx(6000)
    assert (tmp_path / "flame.svg").read_text().startswith("<svg")
    assert DATABASE in (tmp_path / "top.txt").read_text()
    assert "written:" in capsys.readouterr().out
    assert profile.main(["--from", str(tmp_path / "nothing")]) == 2


def test_the_kernel_share_is_read_per_thread_from_proc() -> None:
    """System time and context switches of every thread of a process, from /proc: a thread
    that blocks and wakes up 50 times adds at least 50 switches."""
    before = stacks.kernel_counters([os.getpid()])
    assert before  # this process's threads

    def sleeper() -> None:
        for _ in range(50):
            time.sleep(0.0005)

    t = threading.Thread(target=sleeper)
    t.start()
    t.join()
    # The thread is gone by now: its switches count through the main thread's waits instead,
    # so switch from the main thread too.
    for _ in range(50):
        time.sleep(0.0005)
    share = stacks.kernel_share(before, stacks.kernel_counters([os.getpid()]))
    assert share.switches >= 50
    assert share.system_s >= 0.0
    assert stacks.kernel_counters([2**22 + 12345]) == {}  # no such process: nothing, no error


def test_the_kernel_share_reaches_the_budget_and_its_print() -> None:
    b = stacks.budget(
        stacks.parse_collapsed(_sample_lines()),
        200,
        100,
        0.6,
        {"python": 0.6},
        stacks.KernelShare(system_s=0.3, switches=5000),
    )
    assert b.system_us == pytest.approx(3000)
    assert b.switches == pytest.approx(50)
    text = stacks.render_budget(b)
    assert "of which in the kernel (system time)" in text
    assert "context switches per call (all threads)" in text
    again = stacks.budget_from_dict(b.as_dict())
    assert (again.system_us, again.switches) == (b.system_us, b.switches)
