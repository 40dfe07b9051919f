"""`pdv approval list|approve ID|reject ID`: dual control's second operator, through the
ApprovalService (as a caller with the approvals operation: --caller security, or ops).

Approving a held `keys_trim` on HashiCorp Vault also needs the approver's own Vault token in
VAULT_TOKEN (or the file VAULT_TOKEN_FILE names), sent with that call only."""

from __future__ import annotations

import argparse
from typing import Any

from pdvault_client import Client
from pdvault_client.cli.connection import secret_variable
from pdvault_client.cli.exits import EXIT_OK
from pdvault_client.cli.report import print_json

_ACTION_PREFIX = "APPROVAL_ACTION_"
_STATE_PREFIX = "APPROVAL_STATE_"


def list_requests(client: Client, args: argparse.Namespace) -> int:
    found = client.approvals().list()
    if args.output == "json":
        print_json(found)
        return EXIT_OK
    print(f"{'id':<20} {'action':<15} {'state':<9} {'requested by':<12} {'expires':<20} details")
    for a in found:
        print(
            f"{a['requestId']:<20} {_action(a):<15} {_state(a):<9} {a['requestedBy']:<12} "
            f"{_when(a.get('expiresAt')):<20} {_details(a)}"
        )
    return EXIT_OK


def approve(client: Client, args: argparse.Namespace) -> int:
    done = client.approvals(vault_token=secret_variable("VAULT_TOKEN")).approve(args.request_id)
    return _decided(done, args)


def reject(client: Client, args: argparse.Namespace) -> int:
    return _decided(client.approvals().reject(args.request_id), args)


def _decided(approval: dict[str, Any], args: argparse.Namespace) -> int:
    if args.output == "json":
        print_json(approval)
        return EXIT_OK
    outcome = f": {approval['outcome']}" if approval.get("outcome") else ""
    print(
        f"{approval['requestId']} ({_action(approval)} requested by {approval['requestedBy']}) "
        f"{_state(approval)} by {approval.get('decidedBy', '')}{outcome}"
    )
    return EXIT_OK


def _action(a: dict[str, Any]) -> str:
    return str(a.get("action", "")).removeprefix(_ACTION_PREFIX).lower()


def _state(a: dict[str, Any]) -> str:
    return str(a.get("state", "")).removeprefix(_STATE_PREFIX).lower()


def _details(a: dict[str, Any]) -> str:
    params = a.get("parameters") or {}
    shown = " ".join(f"{k}={v}" for k, v in sorted(params.items()))
    decided = f" decided by {a['decidedBy']}" if a.get("decidedBy") else ""
    outcome = f" ({a['outcome']})" if a.get("outcome") else ""
    return f"{shown}{decided}{outcome}"


def _when(value: object) -> str:
    return str(value)[:19].replace("T", " ") if value else ""
