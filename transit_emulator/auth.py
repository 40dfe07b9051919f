"""Who is asking: the token header, ``auth/token/*-self``, AppRole and Kubernetes login.

Unconfirmed (``[?]``): a request without a token gets 403 (Vault <= 1.9 said 400 ``missing
client token``); renew-self on a non-renewable token gives 400 ``lease is not renewable``; a
bad Kubernetes JWT gives 403 ``permission denied``.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable

from transit_emulator.envelope import Request, Result
from transit_emulator.errors import INVALID_TOKEN, PERMISSION_DENIED, user_error
from transit_emulator.fields import JSON, get_duration, get_str, rfc3339
from transit_emulator.state import Login, State, Token


def authenticate(state: State, headers: dict[str, str]) -> Token:
    """The token of ``X-Vault-Token`` (or ``Authorization: Bearer``); headers lowercased."""
    value = headers.get("x-vault-token", "")
    bearer = headers.get("authorization", "")
    if not value and bearer.lower().startswith("bearer "):
        value = bearer[len("bearer ") :].strip()
    if not value:
        raise PERMISSION_DENIED  # [?]
    token = state.tokens.get(value)
    if token is None:
        raise INVALID_TOKEN
    if token.expires is not None and state.now() >= token.expires:
        del state.tokens[value]
        raise INVALID_TOKEN
    return token


def _caller(request: Request) -> Token:
    if request.token is None:  # the dispatcher authenticates every token route
        raise PERMISSION_DENIED
    return request.token


def lookup_self(state: State, request: Request) -> Result:
    token = _caller(request)
    remaining = 0 if token.expires is None else max(0, int(token.expires - state.now()))
    data: JSON = {
        "accessor": token.accessor,
        "creation_time": int(token.issued),
        "creation_ttl": token.ttl,
        "display_name": token.display_name,
        "entity_id": "",
        "expire_time": None if token.expires is None else rfc3339(token.expires),
        "explicit_max_ttl": 0,
        "id": token.token,
        "issue_time": rfc3339(token.issued),
        "meta": token.meta,
        "num_uses": 0,
        "orphan": token.orphan,
        "path": token.path,
        "policies": token.policy_names,
        "renewable": token.renewable,
        "ttl": remaining,
        "type": "service",
    }
    if token.last_renewal is not None:
        data["last_renewal"] = rfc3339(token.last_renewal)
        data["last_renewal_time"] = int(token.last_renewal)
    return Result(dict(sorted(data.items())))


def renew_self(state: State, request: Request) -> Result:
    token = _caller(request)
    if not token.renewable or token.expires is None:
        raise user_error("lease is not renewable")  # [?]
    increment, given = get_duration(request.body, "increment")
    ttl = increment if given and increment > 0 else token.ttl
    token.last_renewal = state.now()
    token.expires = token.last_renewal + ttl
    return Result(None, auth=token.auth_block(ttl))


def revoke_self(state: State, request: Request) -> Result:
    state.tokens.pop(_caller(request).token, None)
    return Result(no_content=True)


def _login(state: State, login: Login, path: str) -> Result:
    names = ["default", login.policy_name]
    details = (login.display_name, path, login.meta)
    token = state.mint(names, login.rules, login.token_ttl, True, login=details)
    return Result(None, auth=token.auth_block(login.token_ttl))


def approle_login(state: State, roles: dict[str, Login], request: Request) -> Result:
    role_id, _ = get_str(request.body, "role_id")
    secret_id, _ = get_str(request.body, "secret_id")
    if not role_id:
        raise user_error("missing role_id")
    login = roles.get(role_id)
    if login is None or not hmac.compare_digest(login.secret, secret_id):
        raise user_error("invalid role or secret ID")
    return _login(state, login, request.path)


def kubernetes_login(state: State, roles: dict[str, Login], request: Request) -> Result:
    role, _ = get_str(request.body, "role")
    jwt, _ = get_str(request.body, "jwt")
    if not role:
        raise user_error("missing role")
    if not jwt:
        raise user_error("missing jwt")
    login = roles.get(role)
    if login is None:
        raise user_error(f'invalid role name "{role}"')
    if not hmac.compare_digest(login.secret, jwt):
        raise PERMISSION_DENIED  # [?] a JWT the TokenReview rejects
    return _login(state, login, request.path)


LoginHandler = Callable[[State, dict[str, Login], Request], Result]
