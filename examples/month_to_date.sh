#!/bin/sh
# examples/month_to_date.sh: calls and telephone cost per agent since the 1st
# of this month (reports_manager cdr_2), as a table for a terminal, or CSV
# with FORMAT=csv.  It first asks what the report would spend (--dry-run,
# no call) and stops when the plan is refused (the quota, exit 4).
#
#   examples/month_to_date.sh                 # this month so far
#   TODAY=2026-03-15 examples/month_to_date.sh
#
# WOLKVOX overrides the command (e.g. "wolkvox --profile acme").
set -u
today=${TODAY:-$(date +%F)}
first=$(echo "$today" | cut -c1-8)01
wv=${WOLKVOX:-wolkvox}

$wv report cdr_2 --from "$first" --to "$today" --dry-run >&2 || exit $?
exec $wv report cdr_2 --from "$first" --to "$today" --format "${FORMAT:-table}"
