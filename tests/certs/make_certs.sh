#!/usr/bin/env bash
# Regenerates the TLS test certificates in this folder (run once; the outputs are committed).
#   ca.pem                   test CA (self-signed; its key is deleted after signing)
#   server.pem / server.key  server certificate, SAN DNS:localhost, IP:127.0.0.1, IP:::1
#   client.pem / client.key  client certificate for mutual TLS, signed by the CA
# Valid for 100 years; for tests only: the private keys are public.
set -euo pipefail
cd "$(dirname "$0")"
DAYS=36500
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout ca.key -out ca.pem -days "$DAYS" -subj "/CN=latentwire test CA" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"

issue() {  # issue NAME CN EXTENSIONS
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -keyout "$1.key" -out "$TMP/$1.csr" -subj "/CN=$2"
    printf '%s\n' "$3" >"$TMP/$1.ext"
    openssl x509 -req -in "$TMP/$1.csr" -CA ca.pem -CAkey ca.key -CAcreateserial \
        -CAserial "$TMP/ca.srl" -out "$1.pem" -days "$DAYS" -extfile "$TMP/$1.ext"
}

issue server localhost "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1"

issue client "latentwire test client" "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=clientAuth"

rm -f ca.key  # nothing needs to sign more; rerun this script for a new set
chmod 644 ./*.key ./*.pem
openssl verify -CAfile ca.pem server.pem client.pem
