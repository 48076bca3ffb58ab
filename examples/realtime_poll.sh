#!/bin/sh
# examples/realtime_poll.sh: a snapshot of the real-time agents every five
# minutes (wolkvox's guidance for real-time reads), appended as NDJSON with
# the time it was taken, keeping to the day's quota.
#
#   examples/realtime_poll.sh agents.ndjson            # until stopped
#   COUNT=12 examples/realtime_poll.sh agents.ndjson   # one hour
#
# INTERVAL (seconds, default 300) is never taken below 300.  It stops when
# the token is refused (exit 3) or the quota is spent or would be crossed
# (exit 4: the client refuses a call beyond licenses/daily_limit less its
# reserve before sending it); a failed read of the service (exit 5) is
# reported and tried again at the next tick.  WOLKVOX overrides the command
# (e.g. "wolkvox --profile acme").
set -u
out=${1:-agents.ndjson}
interval=${INTERVAL:-300}
if [ "$interval" -lt 300 ]; then
    echo "realtime_poll: INTERVAL $interval is below 300 s: using 300" >&2
    interval=300
fi
count=${COUNT:-0}
wv=${WOLKVOX:-wolkvox}
n=0
while :; do
    n=$((n + 1))
    at=$(date +%FT%T%z)
    if snap=$($wv call real_time agents --format ndjson); then
        printf '%s\n' "$snap" | sed "s/^{/{\"polled_at\":\"$at\",/" >> "$out"
    else
        rc=$?
        case $rc in
            3|4|2) echo "realtime_poll: stopping (exit $rc)" >&2; exit $rc ;;
            *) echo "realtime_poll: the read at $at failed (exit $rc); trying again at the next tick" >&2 ;;
        esac
    fi
    [ "$count" -gt 0 ] && [ "$n" -ge "$count" ] && exit 0
    sleep "$interval"
done
