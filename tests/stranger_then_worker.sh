#!/bin/sh
# A worker program for ps_local --worker_command: first calls the job's
# servers (psctl status) as strangers would, each missing one credential,
# and once with all of them, recording "NAME exit=STATUS" per call in
# RECORD (and the call's output in RECORD.NAME); then runs ps_worker with
# the flags it was given, so the job trains.
# Usage: stranger_then_worker.sh RECORD PSCTL CERT_DIR PS_WORKER [flags...]
record=$1
psctl=$2
certs=$3
worker=$4
shift 4
servers=
for arg in "$@"; do
  case $arg in --servers=*) servers=${arg#--servers=} ;; esac
done
try() {  # NAME [psctl flags...]
  name=$1
  shift
  "$psctl" status --servers="$servers" --timeout=5s "$@" >"$record.$name" 2>&1
  echo "$name exit=$?" >>"$record"
}
ca="--tls_ca=$certs/ca.crt"
try plaintext
try no_token "$ca" "--tls_cert=$certs/client.crt" "--tls_key=$certs/client.key"
try wrong_token "$ca" "--tls_cert=$certs/client.crt" \
  "--tls_key=$certs/client.key" "--auth_token_file=$certs/wrong_token"
try no_client_cert "$ca" "--auth_token_file=$certs/token"
try stranger_cert "$ca" "--tls_cert=$certs/stranger.crt" \
  "--tls_key=$certs/stranger.key" "--auth_token_file=$certs/token"
try all "$ca" "--tls_cert=$certs/client.crt" "--tls_key=$certs/client.key" \
  "--auth_token_file=$certs/token"
exec "$worker" "$@"
