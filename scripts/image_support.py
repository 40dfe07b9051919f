"""What deploy/ci-image.sh needs from Python, run with the project's venv:

image_support.py certs DIR NAME      a self-signed certificate for NAME and 127.0.0.1:
                                     DIR/server.crt, DIR/server.key, DIR/ca.crt (the same
                                     certificate, for the client to trust)
image_support.py health HOST:PORT [--wait SECONDS] SERVICE...
                                     every SERVICE ("" for the whole server) SERVING on the
                                     plaintext health port, waiting for it up to SECONDS
"""

from __future__ import annotations

import argparse
import datetime
import ipaddress
import sys
import time
from pathlib import Path
from typing import Any

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from grpc_health.v1 import health_pb2, health_pb2_grpc


def certs(directory: Path, name: str) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName(name), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    pem = cert.public_bytes(serialization.Encoding.PEM)
    (directory / "server.crt").write_bytes(pem)
    (directory / "ca.crt").write_bytes(pem)
    private = directory / "server.key"
    private.touch(mode=0o600)
    private.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


def health(target: str, services: list[str], wait: float) -> int:
    deadline = time.monotonic() + wait
    last = ""
    while True:
        try:
            with grpc.insecure_channel(target) as channel:
                stub: Any = health_pb2_grpc.HealthStub(channel)  # the stubs type it loosely
                statuses = {
                    service: stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=2)
                    for service in services
                }
            names = {
                s: health_pb2.HealthCheckResponse.ServingStatus.Name(r.status)
                for s, r in statuses.items()
            }
            last = ", ".join(f"{s or '<server>'}: {n}" for s, n in names.items())
            if all(n == "SERVING" for n in names.values()):
                print(f"health {target}: {last}")
                return 0
        except grpc.RpcError as exc:
            last = f"{exc.code().name}: {exc.details()}"
        if time.monotonic() > deadline:
            print(f"health {target}: {last}", file=sys.stderr)
            return 1
        time.sleep(0.5)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    c = commands.add_parser("certs")
    c.add_argument("directory", type=Path)
    c.add_argument("name")
    h = commands.add_parser("health")
    h.add_argument("target")
    h.add_argument("services", nargs="+")
    h.add_argument("--wait", type=float, default=0)
    args = parser.parse_args()
    if args.command == "certs":
        certs(args.directory, args.name)
        return 0
    return health(args.target, args.services, args.wait)


if __name__ == "__main__":
    sys.exit(main())
