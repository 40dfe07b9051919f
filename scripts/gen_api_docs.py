"""Write docs/api.md, the API reference, from the protos' own comments and from the error reasons
of vault/errors.py (run after editing a .proto or a reason; CI runs `--check`, which fails when
the committed file differs, as for the generated Python code).

The protos are compiled with their source information (protoc `--include_source_info`), so every
service, method, message, field and enum value is documented by the comment above it, in the
proto's own words. The errors section lists every reason with its status code and what a client
should do, from `vault.errors.Reason`.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

from google.protobuf import descriptor_pb2
from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"
OUT = ROOT / "docs" / "api.md"
PACKAGE = Path("pdvault") / "v1"

# FileDescriptorProto field numbers (descriptor.proto), for source-info paths.
_MESSAGE, _ENUM, _SERVICE = 4, 5, 6
_FIELD, _NESTED_ENUM, _ENUM_VALUE, _METHOD = 2, 4, 2, 2

_TYPES = {
    descriptor_pb2.FieldDescriptorProto.TYPE_DOUBLE: "double",
    descriptor_pb2.FieldDescriptorProto.TYPE_FLOAT: "float",
    descriptor_pb2.FieldDescriptorProto.TYPE_INT64: "int64",
    descriptor_pb2.FieldDescriptorProto.TYPE_UINT64: "uint64",
    descriptor_pb2.FieldDescriptorProto.TYPE_INT32: "int32",
    descriptor_pb2.FieldDescriptorProto.TYPE_BOOL: "bool",
    descriptor_pb2.FieldDescriptorProto.TYPE_STRING: "string",
    descriptor_pb2.FieldDescriptorProto.TYPE_BYTES: "bytes",
    descriptor_pb2.FieldDescriptorProto.TYPE_UINT32: "uint32",
}


def _descriptors() -> list[descriptor_pb2.FileDescriptorProto]:
    import google.api

    googleapis = Path(next(iter(google.api.__path__))).parent.parent
    well_known = Path(str(resources.files("grpc_tools") / "_proto"))
    sources = sorted(str(p.relative_to(PROTOS)) for p in (PROTOS / PACKAGE).glob("*.proto"))
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "api.binpb"
        args = [
            "grpc_tools.protoc",
            f"-I{PROTOS}",
            f"-I{googleapis}",
            f"-I{well_known}",
            "--include_source_info",
            f"--descriptor_set_out={out}",
            *sources,
        ]
        if protoc.main(args) != 0:
            raise SystemExit("protoc failed")
        files = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes()).file
    return sorted(files, key=lambda f: f.name)


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("|", "\\|")


class _Comments:
    def __init__(self, f: descriptor_pb2.FileDescriptorProto) -> None:
        self._by_path = {
            tuple(loc.path): loc.leading_comments for loc in f.source_code_info.location
        }

    def __call__(self, *path: int) -> str:
        """The comment on one line (for a table cell)."""
        text = self._by_path.get(path, "")
        return _escape(" ".join(line.strip() for line in text.strip().splitlines()).strip())

    def block(self, *path: int) -> str:
        """The comment as Markdown paragraphs and list items (for a description)."""
        out: list[str] = []
        for raw in self._by_path.get(path, "").strip().splitlines():
            line = raw.strip()
            if not line:
                out.append("")
            elif line.startswith("- ") or not out or not out[-1]:
                out.append(_escape(line))
            else:
                out[-1] += " " + _escape(line)
        return "\n".join(out).replace("\n\n\n", "\n\n")


def _type(field: descriptor_pb2.FieldDescriptorProto) -> str:
    name = _TYPES.get(field.type) or field.type_name.rsplit(".", 1)[-1]
    if field.label == descriptor_pb2.FieldDescriptorProto.LABEL_REPEATED:
        return f"repeated {name}"
    return name


def _anchor(name: str) -> str:
    return name.lower()


def _services(f: descriptor_pb2.FileDescriptorProto, c: _Comments) -> Iterator[str]:
    for si, service in enumerate(f.service):
        yield f"## {service.name}\n"
        yield c.block(_SERVICE, si) + "\n"
        yield "| method | request | response | what it does |"
        yield "|---|---|---|---|"
        for mi, method in enumerate(service.method):
            req = method.input_type.rsplit(".", 1)[-1]
            resp = method.output_type.rsplit(".", 1)[-1]
            req = f"stream {req}" if method.client_streaming else req
            resp = f"stream {resp}" if method.server_streaming else resp
            yield (
                f"| `{method.name}` | [{req}](#{_anchor(req.split()[-1])}) "
                f"| [{resp}](#{_anchor(resp.split()[-1])}) | {c(_SERVICE, si, _METHOD, mi)} |"
            )
        yield ""


def _messages(f: descriptor_pb2.FileDescriptorProto, c: _Comments) -> Iterator[str]:
    for mi, message in enumerate(f.message_type):
        yield f"### {message.name}\n"
        about = c.block(_MESSAGE, mi)
        if about:
            yield about + "\n"
        if not message.field:
            yield "(no fields)\n"
            continue
        yield "| field | type | meaning |"
        yield "|---|---|---|"
        for fi, field in enumerate(message.field):
            oneof = ""
            if field.HasField("oneof_index"):
                oneof = f" (one of `{message.oneof_decl[field.oneof_index].name}`)"
            yield f"| `{field.name}` | {_type(field)}{oneof} | {c(_MESSAGE, mi, _FIELD, fi)} |"
        yield ""
    for ei, enum in enumerate(f.enum_type):
        yield f"### {enum.name} (enum)\n"
        about = c.block(_ENUM, ei)
        if about:
            yield about + "\n"
        yield "| value | number | meaning |"
        yield "|---|---|---|"
        for vi, value in enumerate(enum.value):
            yield f"| `{value.name}` | {value.number} | {c(_ENUM, ei, _ENUM_VALUE, vi)} |"
        yield ""


def _errors() -> Iterator[str]:
    sys.path.insert(0, str(ROOT))
    from vault.errors import ERROR_DOMAIN, Reason

    yield "## Errors\n"
    yield (
        "Every error is a gRPC status with `google.rpc.ErrorInfo` (domain "
        f"`{ERROR_DOMAIN}`, a `reason` below, and the deciding `rule` in its metadata); invalid "
        "input adds `google.rpc.BadRequest` with one violation per broken rule (the field and "
        "the rule's name), and the statuses a client should retry add `google.rpc.RetryInfo`; "
        "a refusal over one of the policy's limits (`RATE_LIMITED`, `QUOTA_EXCEEDED`) adds "
        "`google.rpc.QuotaFailure` naming the caller, the purpose and the limit, never a token. "
        "Each reason belongs to exactly one status code. No message contains a value.\n"
    )
    yield "| reason | status | what a client should do |"
    yield "|---|---|---|"
    for reason in Reason:
        yield f"| `{reason.name}` | {reason.code.name} | {_escape(reason.advice)} |"
    yield ""


def render() -> str:
    files = [f for f in _descriptors() if f.name.startswith(str(PACKAGE))]
    parts = [
        "# pdvault API reference (package `pdvault.v1`)\n",
        "Generated by `scripts/gen_api_docs.py` from the comments of `protos/pdvault/v1/` and "
        "the reasons of `vault/errors.py`; CI fails when it is stale. Do not edit by hand.\n",
        "Every call carries `authorization: Bearer <API key>` (or a client certificate, where "
        "the policy maps one). Which caller may call what is in each service's description.\n",
    ]
    for f in files:
        parts.extend(_services(f, _Comments(f)))
    parts.append("## Messages\n")
    for f in files:
        parts.extend(_messages(f, _Comments(f)))
    parts.extend(_errors())
    return "\n".join(parts).rstrip() + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if docs/api.md is stale")
    opts = parser.parse_args()
    text = render()
    if opts.check:
        if not OUT.exists() or OUT.read_text("utf-8") != text:
            print("docs/api.md is stale; run scripts/gen_api_docs.py")
            return 1
        return 0
    OUT.write_text(text, "utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
