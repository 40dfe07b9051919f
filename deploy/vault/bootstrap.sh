#!/usr/bin/env bash
# Set up HashiCorp Vault for pdvault: the Transit engine, the key (not exportable, deletion not
# allowed), the two policies, an AppRole for the service, and the Kubernetes auth role that the
# production manifests log in with (deploy/k8s/production). Idempotent.
#
# Try it with a dev server:
#   vault server -dev -dev-root-token-id=root &
#   export VAULT_ADDR=http://127.0.0.1:8200 VAULT_TOKEN=root
#   deploy/vault/bootstrap.sh
# It prints the AppRole's role id and a fresh secret id for pdvault (PDV_VAULT_AUTH=approle).
# In production run it with an admin token, and hand the secret id to pdvault through your
# secret delivery (response wrapping: add -wrap-ttl=60s to the secret-id line).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
mount="${PDV_VAULT_MOUNT:-transit}"
key="${PDV_VAULT_KEY:-pdvault}"
: "${VAULT_ADDR:?set VAULT_ADDR}"
: "${VAULT_TOKEN:?set VAULT_TOKEN (an admin token)}"

if ! vault secrets list -format=json | grep -q "\"${mount}/\""; then
  vault secrets enable -path="$mount" transit
fi

# Not exportable, no plaintext backup, deletion not allowed. Creating an existing key is a
# no-op in current Vault, so re-running changes nothing.
vault write -f "$mount/keys/$key" type=aes256-gcm96 exportable=false allow_plaintext_backup=false
vault write "$mount/keys/$key/config" deletion_allowed=false
# The audit log's checkpoint signing key (PDV_AUDIT_SIGNER=transit): Ed25519, never exported.
audit_key="${PDV_VAULT_AUDIT_KEY:-pdvault-audit}"
vault write -f "$mount/keys/$audit_key" type=ed25519 exportable=false allow_plaintext_backup=false
vault write "$mount/keys/$audit_key/config" deletion_allowed=false
# The naming secret's key: its version 1 HMAC key MACs a fixed label (every Transit key
# version carries an HMAC key). Never trim it, never delete it.
naming_key="${PDV_VAULT_NAMING_KEY:-pdvault-naming}"
vault write -f "$mount/keys/$naming_key" type=aes256-gcm96 exportable=false allow_plaintext_backup=false
vault write "$mount/keys/$naming_key/config" deletion_allowed=false

# The policies name mount and key literally; rewrite them if you chose others.
render() {
  sed -e "s#transit/#${mount}/#g" -e "s#/pdvault-audit\"#/${audit_key}\"#g" \
    -e "s#/pdvault-naming/#/${naming_key}/#g" \
    -e "s#/pdvault\"#/${key}\"#g" -e "s#/pdvault/#/${key}/#g" "$1"
}
render "$here/pdvault-service.hcl" | vault policy write pdvault-service -
render "$here/pdvault-ops.hcl" | vault policy write pdvault-ops -

if ! vault auth list -format=json | grep -q '"approle/"'; then
  vault auth enable approle
fi
vault write auth/approle/role/pdvault \
  token_policies=pdvault-service token_ttl=1h token_max_ttl=24h \
  secret_id_ttl=720h secret_id_num_uses=0

# Kubernetes auth: pdvault's pods log in with a service account token projected for the audience
# "vault" (PDV_VAULT_AUTH=kubernetes, PDV_VAULT_K8S_ROLE). Vault checks it with the cluster's
# TokenReview API at KUBERNETES_HOST (inside the cluster Vault uses its own service account's
# token and CA). The role binds the service account pdvault of the namespace pdvault, as the
# manifests name them: rename both here if your overlay renames them.
k8s_role="${PDV_VAULT_K8S_ROLE:-pdvault}"
if ! vault auth list -format=json | grep -q '"kubernetes/"'; then
  vault auth enable kubernetes
fi
vault write auth/kubernetes/config kubernetes_host="${KUBERNETES_HOST:-https://kubernetes.default.svc}"
vault write "auth/kubernetes/role/$k8s_role" \
  bound_service_account_names=pdvault \
  bound_service_account_namespaces=pdvault \
  audience=vault \
  token_policies=pdvault-service token_ttl=1h token_max_ttl=24h

role_id="$(vault read -field=role_id auth/approle/role/pdvault/role-id)"
secret_id="$(vault write -f -field=secret_id auth/approle/role/pdvault/secret-id)"
cat <<OUT
Transit key $mount/keys/$key is ready.
Run pdvault with:
  PDV_KMS=vault VAULT_ADDR=$VAULT_ADDR PDV_VAULT_AUTH=approle \\
  VAULT_ROLE_ID=$role_id VAULT_SECRET_ID=<the secret id below> pdv serve
secret id (shown once): $secret_id
On Kubernetes: PDV_VAULT_AUTH=kubernetes PDV_VAULT_K8S_ROLE=$k8s_role (deploy/k8s/production)
Operators get the pdvault-ops policy, e.g.: vault token create -policy=pdvault-ops -ttl=1h
OUT
