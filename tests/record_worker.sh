#!/bin/sh
# A worker program other than ps_worker, for ps_local --worker_command:
# records the arguments and PYTHONPATH it was given, then runs ps_worker
# with those arguments so the job trains.
# Usage: record_worker.sh RECORD_FILE PS_WORKER [ps_worker's flags...]
record=$1
worker=$2
shift 2
printf 'PYTHONPATH=%s argv=%s\n' "$PYTHONPATH" "$*" >>"$record"
exec "$worker" "$@"
