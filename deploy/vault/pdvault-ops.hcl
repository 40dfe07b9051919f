# Operators of pdvault's key: rotate, configure (min_decryption_version) and trim.
# pdvault uses an operator's token with this policy only for that call (pdv keys rotate|trim
# send it as x-vault-token); the service itself never holds these rights.

path "transit/keys/pdvault" {
  capabilities = ["read"]
}

path "transit/keys/pdvault/rotate" {
  capabilities = ["update"]
}

path "transit/keys/pdvault/config" {
  capabilities = ["update"]
}

path "transit/keys/pdvault/trim" {
  capabilities = ["update"]
}
