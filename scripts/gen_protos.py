"""Regenerate the Python code of pdvault's API from protos/ (run after editing a .proto).

The generated modules live in clients/python/pdvault/v1 and are committed, so that the client
library installs without grpcio-tools. `--check` regenerates into a temporary folder and fails
when the committed files differ: CI runs it, so the protos and the code cannot drift apart.
"""

from __future__ import annotations

import argparse
import filecmp
import os
import shutil
import sys
import tempfile
from importlib import resources
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"
OUT = ROOT / "clients" / "python"
PACKAGE = Path("pdvault") / "v1"


def _include_dirs() -> list[str]:
    import google.api  # googleapis-common-protos ships the .proto files beside the modules

    googleapis = Path(next(iter(google.api.__path__))).parent.parent
    well_known = Path(str(resources.files("grpc_tools") / "_proto"))
    return [str(PROTOS), str(googleapis), str(well_known)]


def generate(out: Path) -> None:
    # protoc finds the mypy-protobuf plugins on PATH: the ones installed beside this Python.
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    sources = sorted(str(p.relative_to(PROTOS)) for p in (PROTOS / PACKAGE).glob("*.proto"))
    args = [
        "grpc_tools.protoc",
        *(f"-I{d}" for d in _include_dirs()),
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        # quiet: no "Writing mypy to ..." line per file on every `make test`.
        f"--mypy_out=quiet:{out}",
        f"--mypy_grpc_out=quiet:{out}",
        *sources,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if committed code is stale")
    opts = parser.parse_args()
    if not opts.check:
        generate(OUT)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp))
        fresh, committed = Path(tmp) / PACKAGE, OUT / PACKAGE
        names = sorted(p.name for p in fresh.iterdir() if p.is_file())
        _match, mismatch, errors = filecmp.cmpfiles(fresh, committed, names, shallow=False)
        if mismatch or errors:
            print(f"generated code is stale: {mismatch + errors}; run scripts/gen_protos.py")
            return 1
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
