"""A request as handlers see it, their result, and the bytes of an answer.

Success bodies are ``sdk/logical/translate_response.go``'s envelope; error bodies are
``{"errors": [...]}`` plus Go's trailing newline (``shared/reference/vault-transit.md`` 1).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field

from transit_emulator.errors import VaultError
from transit_emulator.fields import JSON
from transit_emulator.state import Mount, State, Token


@dataclass
class Request:
    op: str  # read | list | update | create | delete
    path: str  # without /v1/
    body: JSON
    query: dict[str, str]
    token: Token | None = None
    match: dict[str, str] = field(default_factory=dict)  # the route's named path segments


@dataclass
class Result:
    data: JSON | None = None
    warnings: list[str] = field(default_factory=list)
    auth: JSON | None = None
    status: int | None = None  # set: logical.RespondWithStatusCode (batch failures)
    no_content: bool = False
    extra: JSON = field(default_factory=dict)  # top-level keys beside the envelope's


@dataclass
class Reply:
    status: int
    body: bytes


Handler = Callable[[State, Request], Result]
TransitHandler = Callable[[State, Mount, Request], Result]


def json_reply(status: int, body: object, newline: bool = True) -> Reply:
    text = json.dumps(body, separators=(",", ":"), ensure_ascii=False)
    return Reply(status, (text + ("\n" if newline else "")).encode("utf-8"))


def error_reply(exc: VaultError) -> Reply:
    return json_reply(exc.status, {"errors": exc.errors})
