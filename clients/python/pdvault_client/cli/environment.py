"""What `pdv --help` says after the commands: the environment, the exit statuses, examples;
and `pdv --version`.

The server's variables and their defaults come from the server's settings (`vault.config`,
where each is stated once); the client commands' own are in CLIENT_VARIABLES, with the
defaults this package uses.
"""

from __future__ import annotations

import tomllib
from importlib import metadata
from pathlib import Path
from typing import NamedTuple

from pdvault_client.address import DEFAULT_ADDR
from pdvault_client.cli.connection import CREDENTIALS_FILE, DEFAULT_DATA_DIR, GRPC_VERBOSITY
from pdvault_client.cli.exits import EXIT_CODES
from pdvault_client.cli.server import NOT_INSTALLED, server_environment


class Variable(NamedTuple):
    name: str
    meaning: str
    default: str = ""  # as shown in `pdv --help` and the README's table
    note: str = ""  # said after the default

    def line(self) -> str:
        default = f" ({self.default})" if self.default else ""
        note = f"; {self.note}" if self.note else ""
        return f"{self.meaning}{default}{note}"


CLIENT_VARIABLES = (
    Variable("PDV_ADDR", "the server to call, HOST:PORT", DEFAULT_ADDR, "--addr wins"),
    Variable("PDV_API_KEY", "the API key to call with; overrides --caller"),
    Variable("PDV_API_KEY_FILE", "a file holding PDV_API_KEY, instead of it"),
    Variable("PDV_DATA_DIR", f"where --caller finds {CREDENTIALS_FILE}", f"./{DEFAULT_DATA_DIR}"),
    Variable("PDV_TLS_CA", "the CA that signed the server's certificate (turns TLS on)"),
    Variable("PDV_TLS_SERVER_NAME", "the name to check in the server's certificate"),
    Variable(
        "PDV_TLS_CLIENT_CERT",
        "this client's certificate (PEM) for mTLS; says who calls",
        note="--tls-client-cert wins",
    ),
    Variable(
        "PDV_TLS_CLIENT_KEY",
        "the private key of PDV_TLS_CLIENT_CERT (PEM)",
        note="--tls-client-key wins",
    ),
    Variable("VAULT_TOKEN", "keys rotate/trim on Vault: your token with pdvault-ops"),
    Variable("VAULT_TOKEN_FILE", "a file holding VAULT_TOKEN, instead of it"),
    Variable("GRPC_VERBOSITY", "gRPC's own log lines", GRPC_VERBOSITY),
)

EXAMPLES = """\
examples:
  pdv serve
  pdv tokenize --caller kyc --subject user-42 --category card_number 4111111111111111
  pdv detokenize --caller payment --purpose payment tok_...
  pdv detokenize --caller payment --purpose payment --output json tok_... tok_...
  pdv keys status --caller ops
  pdv subject shred user-42 --caller ops
  pdv document upload --caller kyc --subject user-42 --type drivers_license licence.jpg
  pdv document get --caller kyc --purpose identity_verification doc_... -o licence.jpg
  pdv policy check"""


def epilog() -> str:
    server = server_environment()
    lines = [] if server is not None else ["environment, server:", f"  {NOT_INSTALLED}", ""]
    client = [(v.name, v.line()) for v in CLIENT_VARIABLES]
    for title, variables in [*(server or []), ("client commands", client)]:
        lines.append(f"environment, {title}:")
        lines.extend(f"  {name:<26} {text}" for name, text in variables)
        lines.append("")
    lines.append("exit status:")
    lines.extend(f"  {code}  {text}" for code, text in EXIT_CODES)
    lines.append("")
    lines.append(EXAMPLES)
    return "\n".join(lines)


def version() -> str:
    """The installed `pdvault-client` distribution's version (every pdvault distribution has
    the same), else the one in its pyproject.toml when run from a checkout."""
    try:
        return metadata.version("pdvault-client")
    except metadata.PackageNotFoundError:
        pass
    pyproject = Path(__file__).resolve().parents[2] / "pyproject.toml"
    try:
        return str(tomllib.loads(pyproject.read_text("utf-8"))["project"]["version"])
    except (OSError, KeyError, TypeError, ValueError):  # TOMLDecodeError is a ValueError
        return "unknown"
