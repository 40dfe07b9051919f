"""``python -m transit_emulator --port 8200 --root-token root``: serve until interrupted."""

from __future__ import annotations

import argparse
import signal
import sys
import threading

from transit_emulator.emulator import DEFAULT_ROOT_TOKEN, TransitEmulator


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m transit_emulator",
        description="Emulate HashiCorp Vault's Transit HTTP API (for tests; not a key store).",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8200)
    parser.add_argument("--root-token", default=DEFAULT_ROOT_TOKEN)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds before each answer")
    args = parser.parse_args(argv)
    emulator = TransitEmulator(root_token=args.root_token, latency=args.latency)
    url = emulator.start(args.host, args.port)
    print(f"Vault transit emulator listening on {url}", flush=True)
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    try:
        stopped.wait()
    except KeyboardInterrupt:
        pass
    finally:
        emulator.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
