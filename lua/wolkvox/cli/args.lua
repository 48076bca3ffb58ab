--- The command line of `wolkvox`: its commands and options (lua-argparse).
-- @module wolkvox.cli.args

local argparse = require "argparse"
local exit = require "wolkvox.cli.exit"

local M = {}

local TOKEN = [[
The token comes from --token-file, else the profile (token_file or token),
else $WOLKVOX_TOKEN; no option takes the token itself (it would show in ps
and in shell history).]]

-- --help that says so when stdout cannot be written (a full disk, a closed
-- pipe) and exits 1, instead of argparse's print.
local function help(p)
    return p:add_help({ action = function()
        local ok, err = io.stdout:write(p:get_help(), "\n")
        if ok then
            ok, err = io.stdout:flush()
        end
        if not ok then
            io.stderr:write("wolkvox: cannot write to stdout: ", tostring(err), "\n")
            os.exit(exit.LOCAL)
        end
        os.exit(exit.OK)
    end })
end

-- Subcommands point at the one table of exit codes (wolkvox --help, the man page).
local SEE_EXIT = "Exit codes: see wolkvox --help (or man wolkvox)."

local GLOBAL = [[
Global options (before or after the command; see `wolkvox --help`): --profile,
--config, --server, --base-url, --token-file, --state-dir, --redis, --quiet,
--verbose, --no-progress, --metrics-file.]]

local function globals(p)
    p:option("--profile", "Profile of the config file (default: $WOLKVOX_PROFILE, else default).")
    p:option("--config", "Config file (default: $WOLKVOX_CONFIG, else $XDG_CONFIG_HOME/wolkvox/config,"
        .. " else ~/.config/wolkvox/config).")
    p:option("--server", "Server: 0031, wv0031 or a https://*.wolkvox.com URL.")
    p:option("--base-url", "Any base URL (the fake server, a gateway).")
    p:option("--token-file", "A file whose first line is the token.")
    p:option("--state-dir", "Directory of the quota ledger and pacing locks.")
    p:option("--redis", "Fleet mode: share the token's limits and the day's count with other hosts through "
        .. "redis://host:port/db (keep a password in the config file, not on the command line).")
    p:option("--redis-cafile", "The CAs (PEM) that sign a rediss:// server's certificate (default: the system's).")
    p:option("--redis-cert", "This client's certificate (PEM) for a rediss:// server that asks for one.")
    p:option("--redis-key", "The private key (PEM) of --redis-cert.")
    p:flag("-q --quiet", "No warnings on stderr, only the failure line.")
    p:flag("-v --verbose", "Log every request, answer, retry and wait on stderr (never the token).")
    p:flag("--no-progress", "No progress line, even on a terminal.")
    p:option("--metrics-file", "At the end of the run, write its metrics for Prometheus to FILE (node_exporter's "
        .. "textfile collector: a .prom file in its directory), counters added to the file's; see docs/metrics.md.")
end

--- The parser.
-- @treturn table an argparse parser; `pparse(argv)` gives the arguments
function M.parser()
    local p = argparse("wolkvox", "The wolkvox contact-center API from the shell.")
        :epilog(TOKEN .. "\n\n" .. exit.HELP .. "\n\nRun `wolkvox COMMAND --help` for a command's options.")
    p:command_target("command")
    p:flag("--version", "Print the version (lua-wolkvox, its C core, Lua and libcurl) and exit."):action(function()
        local ok, core = pcall(require, "wolkvox.core")
        local text = "wolkvox " .. require("wolkvox.version") .. " (" .. _VERSION
            .. (ok and core.curl_version and (", " .. core.curl_version:match("^%S+")) or "")
            .. (ok and "" or "; the C core wolkvox.core is not found") .. ")\n"
        local written, err = io.stdout:write(text)
        if written then
            written, err = io.stdout:flush()
        end
        if not written then
            io.stderr:write("wolkvox: cannot write to stdout: ", tostring(err), "\n")
            os.exit(exit.LOCAL)
        end
        os.exit(exit.OK)
    end)
    globals(p)

    local e = p:command("endpoints", "List the endpoints of the registry.")
        :epilog(GLOBAL .. "\n\nExamples:\n  wolkvox endpoints\n  wolkvox endpoints reports_manager --format json\n\n"
            .. SEE_EXIT)
    e:argument("family", "Only this family."):args("?")
    e:option("--format", "table or json."):choices({ "table", "json" }):default("table")

    local c = p:command("call", "Call one endpoint and print its answer.")
        :epilog(GLOBAL .. "\n\nExamples:\n  wolkvox call information services\n"
            .. "  wolkvox call information routing_points routing=1001 --format table\n"
            .. "  wolkvox call configuration add_ip --body ip.json\n"
            .. "  wolkvox call reports_manager cdr_1 from=2026-01-01 to=2026-01-31 --format csv --output jan.csv\n"
            .. "  wolkvox call wolkvox_storage list_files limit=100 --all-pages --format csv\n\n"
            .. SEE_EXIT)
    c:argument("family", "The family, e.g. information.")
    c:argument("api", "The api, e.g. services.")
    c:argument("params", "Parameters as name=value."):args("*")
    c:option("--body", "A JSON body from FILE (- for stdin).")
    c:option("--format", "json, table, csv or ndjson."):choices({ "json", "table", "csv", "ndjson" })
        :default("json")
    c:option("-o --output", "Write to FILE (renamed into place at the end) instead of stdout.")
    c:flag("--bom", "Start a CSV with a UTF-8 byte order mark (Excel).")
    c:flag("--typed", "Durations to seconds, percentages and numeric strings to numbers, - to empty.")
    c:flag("--all-pages", "Follow a paged lookup's cursor to the end (one call a page); write every item.")
    c:option("--max-pages", "With --all-pages: stop (exit 2) past this many pages (default 100)."):convert(tonumber)

    local r = p:command("report", "Export a report over any range, window by window.")
        :epilog(GLOBAL .. "\n\nExamples:\n"
            .. "  wolkvox report cdr_1 --from 2026-01-01 --to 2026-06-30 --format csv > cdr.csv\n"
            .. "  wolkvox report agent_1 --from 2026-01-01 --to 2026-03-31 --per month --format table\n"
            .. "  wolkvox report agent_1 --from 2026-01-01 --to 2026-06-30 --per week -o agents.xlsx\n"
            .. "  wolkvox report cdr_1 --from 2026-11-01 --to 2026-11-30 --format html -o november.html\n"
            .. "  wolkvox report cdr_1 --from 2026-01-01 --to 2026-12-31 --dry-run\n"
            .. "  wolkvox --profile acme report cdr_1 --from 2026-11-01 --to 2026-11-30 -o nov.csv --bom\n"
            .. "  wolkvox report cdr_1 --from 2026-01-01 --to 2026-06-30 -o cdr.csv --checkpoint cdr.ckpt\n"
            .. "  wolkvox report cdr_1 --from 2026-01-01 --to 2026-06-30 --into calls.db\n\n"
            .. "Dates: YYYY-MM-DD, \"YYYY-MM-DD HH:MM[:SS]\" or YYYYmmddHHiiss, on the operation's clock.\n\n"
            .. SEE_EXIT)
    r:argument("name", "The report: cdr_1 or family/api.")
    r:argument("params", "The report's own parameters as name=value."):args("*")
    r:option("--from", "First day (or time) of the range."):count(1)
    r:option("--to", "Last day (or time) of the range."):count(1)
    r:option("--per", "One call per period (aggregates): day, week or month."):choices({ "day", "week", "month" })
    r:option("--format", "csv (the default), ndjson, json, table, singer (Singer messages), xlsx (an Excel "
        .. "workbook, typed, with charts under --per) or html (one self-contained page with charts)."):choices({
        "csv", "ndjson", "json", "table", "singer", "xlsx", "html" })
    r:option("-o --output", "Write to FILE (renamed into place at the end) instead of stdout.")
    r:flag("--bom", "Start a CSV with a UTF-8 byte order mark (Excel).")
    r:option("--delimiter", "The CSV's delimiter: , (the default), ; (what Spanish and Portuguese Excel expect), "
        .. "| or tab.")
    r:flag("--dry-run", "Print the windows and the calls it would spend, and spend none.")
    r:option("--checkpoint", "Record finished windows in FILE (needs --output; csv, ndjson or json): the "
        .. "output is OUTPUT.part until the last window is in. After a failure (exit 7), Ctrl-C (130), "
        .. "SIGTERM (143) or kill -9, run the same command again to finish it byte for byte, fetching "
        .. "only what is missing.")
    r:flag("--typed", "Durations to seconds, percentages and numeric strings to numbers, - to empty.")
    r:option("--max-calls", "Plan at most N calls (default: 5 % of the day's limit, or 50 while it is unknown); "
        .. "a larger plan is refused before any call."):convert(tonumber)
    r:flag("-y --yes", "Allow a plan of any size the day's quota allows (no --max-calls ceiling).")
    r:option("--into", "Load into a database instead: a SQLite file (calls.db, sqlite:PATH) or "
        .. "postgresql://user@host:port/db (password: ~/.pgpass or $PGPASSWORD). Typed columns, merged by the "
        .. "report's key, each window committed with its state: run it again after a failure to finish it; "
        .. "a finished range is not fetched again (see --refresh). See docs/databases.md.")
    r:option("--table", "With --into: the table's name (default: the report's, e.g. cdr_1).")
    r:flag("--refresh", "With --into: fetch the range again even if the database says it was loaded.")

    local s = p:command("sync", "Fetch what is new since the last run (a state file remembers where it got).")
        :epilog(GLOBAL .. "\n\nExamples:\n"
            .. "  wolkvox sync cdr_1 --state cdr.sync --since 2026-01-01 --output cdr.csv --append\n"
            .. "  wolkvox sync cdr_1 --state cdr.sync --lag 15m --output new-$(date +%F).csv\n"
            .. "  wolkvox sync agent_1 --state agent.sync --since 2026-01-01 --per day --format ndjson\n"
            .. "  wolkvox sync cdr_1 --since 2026-01-01 --into calls.db   # the state lives in the database\n"
            .. "  wolkvox sync --plan nightly.plan            # many streams under one share of the quota\n\n"
            .. "Each run fetches from the state's watermark (first: --since) to --until (default: now minus\n"
            .. "--lag), reads --overlap again for rows recorded late, writes only rows not written before,\n"
            .. "then moves the watermark.  Run more often than every 5 minutes (the vendor's polling\n"
            .. "interval), it warns and spends nothing unless --force.\n\n"
            .. SEE_EXIT)
    s:argument("name", "The report: cdr_1 or family/api (not with --plan)."):args("?")
    s:argument("params", "The report's own parameters as name=value."):args("*")
    s:option("--plan", "Run a plan file instead: several streams caught up under one share of the day's "
        .. "quota, highest priority first; exit 9 when the share is spent (the next run goes on). See "
        .. "docs/plans.md.")
    s:flag("--dry-run", "With --plan: print what the plan costs (its backlog, a steady day, the days the "
        .. "backlog takes at its share) and spend nothing.")
    s:option("--state", "The sync's state file (created on the first run); not with --into.")
    s:option("--since", "Where the first run starts (a date).")
    s:option("--until", "Where this run stops (default: now minus --lag).")
    s:option("--lag", "How far behind now to stop: 600, 10m, 1h (default 10m).")
    s:option("--overlap", "How much before the watermark to read again for late rows (default 1h).")
    s:option("--per", "Aggregates: one call per closed day."):choices({ "day" })
    s:option("--format", "csv, ndjson, json or singer (Singer messages; --state then also takes the last "
        .. "STATE's value back)."):choices({ "csv", "ndjson", "json", "singer" }):default("csv")
    s:option("-o --output", "Write to FILE instead of stdout.")
    s:flag("--append", "Add the new rows to --output (csv or ndjson) instead of replacing it.")
    s:flag("--bom", "Start a CSV with a UTF-8 byte order mark (Excel).")
    s:option("--delimiter", "The CSV's delimiter: , (the default), ;, | or tab.")
    s:flag("--typed", "Durations to seconds, percentages and numeric strings to numbers, - to empty.")
    s:flag("--force", "Sync even when the last run was less than 5 minutes ago.")
    s:option("--max-calls", "Plan at most N calls (default: 5 % of the day's limit, or 50 while it is unknown); "
        .. "a larger catch-up is refused before any call."):convert(tonumber)
    s:flag("-y --yes", "Allow a catch-up of any size the day's quota allows (no --max-calls ceiling).")
    s:option("--into", "Load into a database (a SQLite file or postgresql://...) instead of a file; its "
        .. "state is kept there, committed with each window's rows (no --state).")
    s:option("--table", "With --into: the table's name (default: the report's).")
    s:option("--stream", "With --into: the name the state is kept under (default: made from the report "
        .. "and its parameters).")

    local st = p:command("status", "What each stream of a plan did last, and the day's budget; without "
        .. "--plan, the day's quota.")
        :epilog(GLOBAL .. "\n\nExamples:\n  wolkvox status --plan nightly.plan\n  wolkvox status --format json\n\n"
            .. SEE_EXIT)
    st:option("--plan", "The plan file.")
    st:option("--format", "table or json."):choices({ "table", "json" }):default("table")

    local sc = p:command("schema", "Print the table a report loads into (--into), or its JSON Schema.")
        :epilog(GLOBAL .. "\n\nExamples:\n  wolkvox schema cdr_1\n  wolkvox schema agent_1 --dialect postgresql\n"
            .. "  wolkvox schema cdr_1 --dialect json-schema\n\n" .. SEE_EXIT)
    sc:argument("name", "The report: cdr_1 or family/api.")
    sc:option("--dialect", "sqlite (the default), postgresql or json-schema.")
        :choices({ "sqlite", "postgresql", "json-schema" }):default("sqlite")
    sc:option("--table", "The table's name (default: the report's).")

    local q = p:command("quota", "The day's quota as this machine counted it.")
        :epilog(GLOBAL .. "\n\nExamples:\n  wolkvox quota\n  wolkvox quota --measure   # asks token_info: 1 call\n\n"
            .. SEE_EXIT)
    q:flag("--measure", "Ask wolkvox (information/token_info, one call) instead of the local ledger.")
    q:option("--format", "text or json (remaining is the day's; available leaves the reserve out)."):choices(
        { "text", "json" }):default("text")

    local d = p:command("date", "Print a date read on the operation's clock (utc_offset), for file names.")
        :epilog(GLOBAL .. "\n\nExamples:\n  wolkvox date yesterday            # 2026-12-05\n"
            .. "  wolkvox date last-month --end     # its last day\n"
            .. "  d=$(wolkvox date yesterday); wolkvox report cdr_1 --from \"$d\" --to \"$d\" -o \"cdr-$d.csv\"\n\n"
            .. SEE_EXIT)
    d:argument("when", "now, today, yesterday, -Nd, this-week, last-week, this-month, last-month, this-year, "
        .. "last-year, or a date.")
    d:flag("--end", "The last day of the period (default: its first).")
    d:flag("--time", "Also the time of day (YYYY-MM-DD HH:MM:SS).")

    local f = p:command("fake", "Run the bundled fake wolkvox server in the foreground.")
        :epilog(GLOBAL .. "\n\nExamples:\n  wolkvox fake --port 8089\n"
            .. "  WOLKVOX_TOKEN=test-token wolkvox --base-url http://127.0.0.1:8089 call information services\n\n"
            .. SEE_EXIT)
    f:option("--port", "Port (default 8089)."):convert(tonumber)
    f:option("--rows-per-day", "Rows a day of the seeded reports."):convert(tonumber)
    f:option("--scenario", "A scenario file (JSON: tokens, licences, data, faults; see docs/fake.md).")
    f:option("--idle-timeout", "Seconds a connection may wait for a request's next bytes (default 60).")
    for _, x in ipairs { p, e, c, r, s, st, sc, q, d, f } do
        help(x)
    end
    return p
end

return M
