#!/usr/bin/env bash
# Writes throw-away certificates into DIR for the TLS tests (no private key
# is kept in the repository): a CA; a server certificate for 127.0.0.1 and
# localhost signed by it; a client certificate signed by it; and a second,
# unrelated CA with a client certificate of its own (a stranger's).
#   tests/make_certs.sh DIR
set -euo pipefail
dir=$1
mkdir -p "$dir"
cd "$dir"
quiet() { "$@" 2>/dev/null; }

make_ca() {  # NAME
  quiet openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=$1" \
    -keyout "$1.key" -out "$1.crt"
}
make_cert() {  # NAME CA SUBJECT_ALT_NAMES EXTENDED_KEY_USAGE
  quiet openssl req -newkey rsa:2048 -nodes -subj "/CN=$1" \
    -keyout "$1.key" -out "$1.csr"
  printf 'subjectAltName=%s\nextendedKeyUsage=%s\n' "$3" "$4" > "$1.ext"
  quiet openssl x509 -req -in "$1.csr" -CA "$2.crt" -CAkey "$2.key" \
    -CAcreateserial -days 2 -extfile "$1.ext" -out "$1.crt"
  rm -f "$1.csr" "$1.ext"
}

make_ca ca
make_cert server ca "IP:127.0.0.1,DNS:localhost" serverAuth
make_cert client ca "DNS:worker" clientAuth
make_ca stranger_ca
make_cert stranger stranger_ca "DNS:stranger" clientAuth
echo "job-token-$RANDOM$RANDOM" > token
echo "not-the-token" > wrong_token
