"""An emulator of HashiCorp Vault's Transit secrets engine HTTP API, for tests and benchmarks.

HashiCorp Vault cannot be installed here, so pdvault's tests and ``bench/`` talk to this real
HTTP server through the real ``hvac`` client. It follows ``shared/reference/vault-transit.md``
(beside this repository), ``docs/vault-transit-hmac-sign.md`` and, where both are silent,
Vault's own source (``builtin/logical/transit``, ``sdk/helper/keysutil``). It is a dev-only
package: the ``pdvault`` distribution does not ship it.

Emulated:

* the ``/v1`` HTTP conventions: the success envelope, ``{"errors": [...]}`` with Go's trailing
  newline, ``Content-Type: application/json`` and ``Cache-Control: no-store``, 204 for empty
  answers, 404 ``{"errors":[]}`` for empty reads and lists, go-multierror wrapping of non-coded
  errors, 403 permission denied / invalid token, 503 ``Vault is sealed``; the ``LIST`` verb and
  ``GET ?list=true``; ``X-Vault-Namespace`` is accepted and ignored;
* transit at any enabled mount (``transit/`` by default): keys create, read, list, delete,
  config, rotate, trim, ``config/keys``; datakey, encrypt, decrypt, rewrap, with ``batch_input``,
  ``reference`` and ``partial_failure_response_code``; ``hmac``, ``sign`` and ``verify``;
* two key types, with real cryptography: ``aes256-gcm96`` (``vault:vN:base64(nonce|ct|tag)``,
  AAD from ``associated_data``) and ``ed25519`` (pure Ed25519; ``keys`` read shows each
  version's public key); each version of either has its own HMAC key;
* ``sys/mounts``, ``sys/seal-status``, ``sys/health`` (GET/HEAD), ``sys/init``; token
  ``lookup-self``, ``renew-self``, ``revoke-self``; AppRole and Kubernetes login;
* ACL policies (``acl.py``): POST on ``encrypt/:name`` is *update* when the key exists and
  *create* otherwise (upsert); every other POST is *update*.

Deliberately not emulated, each answered as Vault answers a type or request it does not know:
other key types (``aes128-gcm96``, ``chacha20-poly1305``, ``rsa-*``, ``ecdsa-*``, ``hmac`` ...:
400 ``unknown key type <t>``, which real Vault would not say for those); derived keys and
convergent encryption (400 ``transit emulator: derived keys are not emulated``); Ed25519ph and
Ed25519ctx (Enterprise-only in Vault too); leases, response wrapping, request-size limits,
HA/standby states, export/backup/restore/cmac endpoints. Points the sources leave open are
marked ``[?]`` where they are used.

Test controls on ``TransitEmulator``: ``seal``/``unseal``, ``set_latency`` (also
``--latency``, which ``bench/`` uses), ``fail_next``, ``advance_clock``, ``create_token`` /
``revoke_token``, ``add_approle``, ``add_kubernetes_role`` and the ``calls`` counter.

Modules: ``emulator`` (front door and controls), ``httpd`` (sockets), ``routing``, ``acl``,
``auth``, ``sysapi``, ``lifecycle`` (key lifecycle), ``dataplane`` (encrypt side),
``signing`` (hmac, sign, verify), ``keys`` (one key's versions and cryptography), ``batch``,
``state``, ``envelope``, ``fields``, ``errors``.
"""

from transit_emulator.emulator import DEFAULT_ROOT_TOKEN, TransitEmulator
from transit_emulator.errors import ERR_TOO_OLD

__all__ = ["DEFAULT_ROOT_TOKEN", "ERR_TOO_OLD", "TransitEmulator"]
