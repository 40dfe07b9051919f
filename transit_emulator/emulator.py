"""``TransitEmulator``: the server's front door (dispatch) and the controls tests use.

One request: latency, the call counter, injected failures, the unauthenticated ``sys`` paths,
the seal, the JSON body, the token, the encrypt ExistenceCheck (``create`` vs ``update``), the
policy check, the handler, then the success envelope.
"""

from __future__ import annotations

import collections
import json
import threading
import time
import uuid
from collections.abc import Callable
from urllib.parse import parse_qs, urlsplit

from transit_emulator import acl, auth, sysapi
from transit_emulator.envelope import Reply, Request, error_reply, json_reply
from transit_emulator.errors import SEALED, UNSUPPORTED_OPERATION, VaultError, user_error
from transit_emulator.fields import JSON
from transit_emulator.httpd import EmulatorHTTPServer
from transit_emulator.routing import Route, route
from transit_emulator.state import Login, State

DEFAULT_ROOT_TOKEN = "root"
_OPERATIONS = {"GET": "read", "HEAD": "read", "LIST": "list", "DELETE": "delete"}


class TransitEmulator:
    """A HashiCorp Vault server speaking the Transit API over HTTP, with test controls.

    ``sleep`` is how the injected latency waits (tests may pass a recorder instead).
    """

    def __init__(
        self,
        root_token: str = DEFAULT_ROOT_TOKEN,
        latency: float = 0.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.root_token = root_token
        self.latency = latency
        self.calls: collections.Counter[str] = collections.Counter()
        self.url = ""
        self._sleep = sleep
        self._state = State(root_token)
        self._failures: list[tuple[int, str, str | None]] = []
        self._server: EmulatorHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ---------------------------------------------------------------------------- lifecycle

    def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Serve from a background thread; return the base URL ``http://host:port``."""
        if self._server is not None:
            raise RuntimeError("emulator already started")
        self._server = EmulatorHTTPServer((host, port), self.handle)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.02},
            name="transit-emulator",
            daemon=True,
        )
        self._thread.start()
        self.url = f"http://{host}:{self._server.server_address[1]}"
        return self.url

    def stop(self) -> None:
        """Stop serving and cut kept-alive connections; calling it twice is harmless."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.close_connections()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> TransitEmulator:
        if self._server is None:
            self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # ------------------------------------------------------------------------ test controls

    def now(self) -> float:
        return self._state.now()

    def advance_clock(self, seconds: float) -> None:
        """Move the emulator's clock forward (token expiry, auto-rotation)."""
        with self._state.lock:
            self._state.clock_offset += seconds

    def seal(self) -> None:
        with self._state.lock:
            self._state.sealed = True

    def unseal(self) -> None:
        with self._state.lock:
            self._state.sealed = False

    def set_latency(self, seconds: float) -> None:
        """Wait this long before every answer (a network hop, or a slow Vault)."""
        self.latency = seconds

    def fail_next(
        self,
        n: int = 1,
        status: int = 500,
        message: str = "injected failure",
        path_contains: str | None = None,
    ) -> None:
        """Answer the next ``n`` requests (only those whose path contains ``path_contains``, if
        given) with ``status`` and ``{"errors":[message]}``. They still count in ``calls``."""
        with self._state.lock:
            self._failures.extend([(status, message, path_contains)] * n)

    def reset_calls(self) -> None:
        with self._state.lock:
            self.calls.clear()

    def create_token(
        self,
        policies: dict[str, list[str]] | None = None,
        ttl: int = 3600,
        renewable: bool = True,
    ) -> str:
        """A service token with the ``default`` policy plus ``policies`` (path -> capabilities,
        a path may end in ``*``). ``ttl`` 0 means no expiry."""
        with self._state.lock:
            names = ["default"]
            if policies:
                self._state.policy_seq += 1
                names.append(f"emulated-{self._state.policy_seq}")
            rules = {p: set(caps) for p, caps in (policies or {}).items()}
            return self._state.mint(names, rules, ttl, renewable).token

    def revoke_token(self, token: str) -> None:
        with self._state.lock:
            self._state.tokens.pop(token, None)

    def add_approle(
        self,
        role_id: str,
        secret_id: str,
        policies: dict[str, list[str]],
        token_ttl: int = 3600,
        role_name: str | None = None,
        mount_point: str = "approle",
    ) -> None:
        name = role_name or role_id
        rules = {p: set(c) for p, c in policies.items()}
        login = Login(secret_id, rules, name, token_ttl, "approle", {"role_name": name})
        with self._state.lock:
            self._state.approles.setdefault(mount_point, {})[role_id] = login

    def add_kubernetes_role(
        self,
        role: str,
        jwt: str,
        policies: dict[str, list[str]],
        token_ttl: int = 3600,
        service_account: str = "default",
        namespace: str = "default",
        mount_point: str = "kubernetes",
    ) -> None:
        meta = {
            "role": role,
            "service_account_name": service_account,
            "service_account_namespace": namespace,
            "service_account_secret_name": "",
            "service_account_uid": str(uuid.uuid5(uuid.NAMESPACE_URL, namespace + service_account)),
        }
        rules = {p: set(c) for p, c in policies.items()}
        name = f"kubernetes-{namespace}-{service_account}"
        login = Login(jwt, rules, role, token_ttl, name, meta)
        with self._state.lock:
            self._state.k8s_roles.setdefault(mount_point, {})[role] = login

    # --------------------------------------------------------------------------- dispatching

    def handle(self, method: str, target: str, headers: dict[str, str], raw: bytes) -> Reply:
        """Answer one HTTP request (everything except the socket work); headers lowercased."""
        if self.latency > 0:
            self._sleep(self.latency)
        url = urlsplit(target)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        if not url.path.startswith("/v1/"):
            return error_reply(VaultError(404, []))
        path = url.path[len("/v1/") :]
        op = _OPERATIONS.get(method, "update")
        if method == "GET" and query.get("list", "").lower() in ("true", "1"):
            op = "list"
        with self._state.lock:
            found = route(self._state, path)
            self.calls[found.counter(op)] += 1
            for i, (status, message, needle) in enumerate(self._failures):
                if needle is None or needle in path:
                    del self._failures[i]
                    return error_reply(VaultError(status, [message]))
            if method not in ("GET", "HEAD", "LIST", "DELETE", "POST", "PUT"):
                return error_reply(UNSUPPORTED_OPERATION)
            try:
                return self._serve(found, method, Request(op, path, {}, query), headers, raw)
            except VaultError as exc:
                return error_reply(exc)

    def _serve(
        self, found: Route, method: str, request: Request, headers: dict[str, str], raw: bytes
    ) -> Reply:
        state, path = self._state, request.path
        if path == "sys/health" and method in ("GET", "HEAD"):
            return sysapi.health(state, request.query, method)
        if path == "sys/seal-status" and request.op == "read":
            return json_reply(200, sysapi.seal_status(state))
        if path == "sys/init" and request.op == "read":
            return json_reply(200, {"initialized": True})
        if state.sealed:
            raise SEALED
        if raw.strip() and method in ("POST", "PUT", "DELETE"):
            request.body = _parse_body(raw)
        if not found.unauthenticated:
            request.token = auth.authenticate(state, headers)
        if found.error is None and request.op == "update" and found.exists and not found.exists():
            request.op = "create"  # encrypt on a missing key: the upsert needs `create`
        acl.authorize(request.token, request.op, path)
        if found.error is not None:
            raise found.error
        handler = found.handlers.get("update" if request.op == "create" else request.op)
        if handler is None:
            raise UNSUPPORTED_OPERATION
        result = handler(state, request)
        if result.no_content:
            return Reply(204, b"")
        envelope: JSON = {
            "request_id": str(uuid.uuid4()),
            "lease_id": "",
            "renewable": False,
            "lease_duration": 0,
            "data": result.data,
            "wrap_info": None,
            "warnings": result.warnings or None,
            "auth": result.auth,
            "mount_type": found.mount_type if result.status is None else "",
            **result.extra,
        }
        if result.status is None:
            return json_reply(200, envelope)
        # logical.RespondWithStatusCode: the envelope via json.Marshal, so no trailing newline
        return json_reply(result.status, envelope, newline=False)


def _parse_body(raw: bytes) -> JSON:
    try:
        parsed = json.loads(raw)
    except ValueError:
        parsed = None
    if not isinstance(parsed, dict):
        raise user_error("error parsing JSON")  # [?] wording
    return parsed
