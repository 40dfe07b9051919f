# The pdvault service's own identity: use of one Transit key, nothing else.
# It wraps new data keys (encrypt), unwraps them (decrypt) and moves them to the latest key
# version (rewrap, which happens inside Vault). It cannot create, rotate, configure, trim,
# export or delete the key: `update` without `create` on encrypt means an encrypt on a missing
# key is denied instead of creating one.

path "transit/encrypt/pdvault" {
  capabilities = ["update"]
}

path "transit/decrypt/pdvault" {
  capabilities = ["update"]
}

path "transit/rewrap/pdvault" {
  capabilities = ["update"]
}

# Key metadata (versions, min_decryption_version) for `pdv keys status` and start-up checks.
# This returns no key material.
path "transit/keys/pdvault" {
  capabilities = ["read"]
}

# Audit-log checkpoints (PDV_AUDIT_SIGNER=transit): Ed25519 signatures by the `pdvault-audit`
# key (type ed25519), which never leaves Vault, and its public key, for `pdv audit key`.
path "transit/sign/pdvault-audit" {
  capabilities = ["update"]
}

path "transit/keys/pdvault-audit" {
  capabilities = ["read"]
}

# The naming secret (vault.domain.naming): `hmac` of a fixed label under the `pdvault-naming`
# key, version 1, keys the digests by which the shred log, `shredded_subjects` and erasure
# receipts recognise a shredded subject id. Never trim this key (a rotation is harmless: pdvault
# pins version 1); losing version 1 makes every earlier shred unrecognisable.
path "transit/hmac/pdvault-naming/sha2-256" {
  capabilities = ["update"]
}
