#!/bin/sh
# examples/nightly_export.sh: yesterday's call detail to a dated CSV, for cron.
#
#   15 2 * * *  /usr/local/share/wolkvox/nightly_export.sh /srv/exports
#
# The operation comes from the config file's profile (WOLKVOX_PROFILE, else
# default; see README "The command line").  DAY=YYYY-MM-DD exports another
# day; WOLKVOX overrides the command (e.g. "wolkvox --profile acme").
# The file appears under its final name only once it is whole; on a failure
# one line goes to stderr (cron mails it) and the exit code says why.
set -u
dir=${1:-.}
# "yesterday" on the operation's clock (the profile's utc_offset), not the
# machine's: at 02:15 UTC, Bogota's yesterday still has hours to run.
day=${DAY:-$(${WOLKVOX:-wolkvox} date yesterday)} || exit
out="$dir/cdr-$day.csv"

${WOLKVOX:-wolkvox} report cdr_1 --from "$day" --to "$day" --output "$out"
rc=$?
case $rc in
    0) ;;
    2) echo "nightly_export: bad parameters or config (exit 2)" >&2 ;;
    3) echo "nightly_export: the token was refused: check the profile's token_file (exit 3)" >&2 ;;
    4) echo "nightly_export: the day's quota is spent: run it again tomorrow (exit 4)" >&2 ;;
    5) echo "nightly_export: wolkvox or the network failed: run it again later (exit 5)" >&2 ;;
    6) echo "nightly_export: a window was truncated: export it in smaller ranges (exit 6)" >&2 ;;
    *) echo "nightly_export: failed (exit $rc)" >&2 ;;
esac
exit $rc
