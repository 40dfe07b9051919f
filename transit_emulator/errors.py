"""Answers other than success, and the exact texts Vault uses for them.

Vault's core turns a handler's ``logical.ErrorResponse`` into 400 with the text unwrapped, and
any other (non-coded) error into 500 wrapped by hashicorp/go-multierror
(``shared/reference/vault-transit.md`` section 1).
"""

from __future__ import annotations

ERR_TOO_OLD = "ciphertext or signature version is disallowed by policy (too old)"
ERR_CONVERGENT = "convergent encryption requires derivation to be enabled"
ERR_CONTEXT_MIX = "context should be set either in all the request blocks or in none"
ERR_NONCE_NOT_ALLOWED = "provided nonce not allowed for this key"
# Not Vault's words: the emulator keeps no derived keys (nothing in pdvault uses them).
ERR_NOT_EMULATED_DERIVED = "transit emulator: derived keys are not emulated"


def multierror(*messages: str) -> str:
    """Format errors the way hashicorp/go-multierror does."""
    if len(messages) == 1:
        return f"1 error occurred:\n\t* {messages[0]}\n\n"
    points = "\n\t".join(f"* {m}" for m in messages)
    return f"{len(messages)} errors occurred:\n\t{points}\n\n"


class VaultError(Exception):
    """An answer other than success: an HTTP status and the ``errors`` list."""

    def __init__(self, status: int, errors: list[str]) -> None:
        super().__init__(f"{status}: {errors}")
        self.status = status
        self.errors = errors


def user_error(message: str) -> VaultError:
    """``logical.ErrorResponse``: 400 with the text unwrapped."""
    return VaultError(400, [message])


def internal_error(message: str) -> VaultError:
    """A non-coded handler error: 500, wrapped by core in go-multierror."""
    return VaultError(500, [multierror(message)])


def not_found() -> VaultError:
    """A read or list that finds nothing: 404 with an empty ``errors`` list."""
    return VaultError(404, [])


PERMISSION_DENIED = VaultError(403, [multierror("permission denied")])
INVALID_TOKEN = VaultError(403, [multierror("permission denied", "invalid token")])
UNSUPPORTED_PATH = VaultError(404, [multierror("unsupported path")])  # [?] body
UNSUPPORTED_OPERATION = VaultError(405, [multierror("unsupported operation")])  # [?] body
SEALED = VaultError(503, ["Vault is sealed"])


class OpError(Exception):
    """An ``errutil.UserError`` (or, with ``internal``, any other error) from a key operation."""

    def __init__(self, message: str, internal: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.internal = internal

    def as_vault_error(self) -> VaultError:
        return internal_error(self.message) if self.internal else user_error(self.message)
