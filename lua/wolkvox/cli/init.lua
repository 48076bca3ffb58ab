--- The `wolkvox` command: a thin shell over the library (`wolkvox.new`,
-- `c:call`, `c:each`, `c:plan`, `c:quota`, `wolkvox.export`): argument
-- parsing (`wolkvox.cli.args`), profiles (`wolkvox.cli.profile`), formats
-- (`wolkvox.export`), progress (`wolkvox.cli.progress`) and exit codes
-- (`wolkvox.cli.exit`).
--
--     os.exit(require("wolkvox.cli").main(arg))
-- @module wolkvox.cli

local args = require "wolkvox.cli.args"
local coerce = require "wolkvox.coerce"
local errors = require "wolkvox.errors"
local exit = require "wolkvox.cli.exit"
local export = require "wolkvox.out.formats"
local output = require "wolkvox.cli.output"
local prepare = require "wolkvox.call.prepare"
local profile = require "wolkvox.cli.profile"
local progress = require "wolkvox.cli.progress"
local registry = require "wolkvox.api.registry"
local words = require "wolkvox.cli.words"

local format, concat, ipairs, pairs, next, tostring, tonumber, type, sort =
    string.format, table.concat, ipairs, pairs, next, tostring, tonumber, type, table.sort

local M = {}

-- A failure the command reports with one line and an exit code.
local function fail(code, message)
    error({ cli_exit = code, message = message }, 0)
end

local function say(...)
    io.stderr:write("wolkvox: ", ...)
    io.stderr:write("\n")
end

-- name=value arguments to a parameter table; the range helpers' numeric
-- options (max_rows, retries, ...) become numbers.
local function parameters(list)
    local out = {}
    for _, a in ipairs(list or {}) do
        local k, v = a:match("^([%w_]+)=(.*)$")
        if not k then
            fail(exit.USAGE, "a parameter is name=value (got '" .. a .. "')")
        end
        if prepare.OPTIONS[k] and k ~= "from" and k ~= "to" and k ~= "per" then
            v = tonumber(v) or fail(exit.USAGE, k .. " must be a number")
        end
        out[k] = v
    end
    return out
end

-- The client options: the profile's, then the command line's over them.
local function client_options(a, hooks)
    local o, warn = profile.load(a.config, a.profile)
    if not o then
        fail(exit.USAGE, warn)
    end
    if not a.quiet then
        for _, w in ipairs(warn) do
            say("warning: ", w)
        end
    end
    -- The server and its token are one pair, read command line first, then
    -- the environment, then the profile: a server named on the command line
    -- or in the environment never gets the profile's token.
    local getenv = os.getenv
    local server_from, token_from
    if a.server or a.base_url then
        server_from = "the command line"
        o.server, o.base_url = a.server, a.base_url
    elseif (getenv("WOLKVOX_SERVER") or "") ~= "" then
        server_from = "the environment (WOLKVOX_SERVER)"
        o.server, o.base_url = getenv("WOLKVOX_SERVER"), nil
    elseif o.server or o.base_url then
        server_from = "the profile"
    end
    local profile_token = o.token or o.token_file
    if a.token_file then
        token_from = "the command line (--token-file)"
        o.token_file, o.token = profile.expand(a.token_file), nil
    elseif (getenv("WOLKVOX_TOKEN") or "") ~= "" then
        token_from = "the environment (WOLKVOX_TOKEN)"
        o.token_file, o.token = nil, nil -- wolkvox.new reads WOLKVOX_TOKEN
    elseif server_from ~= "the profile" then
        if profile_token and server_from then
            error(errors.new("auth", { message = "the server comes from " .. server_from .. ", so its token "
                .. "must too (--token-file FILE or WOLKVOX_TOKEN): a profile's token goes only to the "
                .. "profile's own server" }), 0)
        end
        o.token_file, o.token = nil, nil
    elseif profile_token then
        token_from = "the profile"
    end
    if a.verbose then
        say(format("server from %s, token from %s", server_from or "nowhere", token_from or "nowhere"))
    end
    if a.state_dir then
        o.state_dir = profile.expand(a.state_dir)
    end
    if a.redis then
        o.redis = a.redis
    end
    for _, k in ipairs { "redis_cafile", "redis_cert", "redis_key" } do
        if a[k] then
            o[k] = profile.expand(a[k])
        end
    end
    if a.verbose then
        o.logger = function(level, line) io.stderr:write("wolkvox [", level, "] ", words.say(line), "\n") end
    elseif not a.quiet then
        o.logger = function(level, line)
            if level == "warn" or level == "error" then
                io.stderr:write("wolkvox [", level, "] ", words.say(line), "\n")
            end
        end
    end
    for k, v in pairs(hooks or {}) do
        o[k] = v
    end
    return o
end

local function connect(a, hooks)
    local wolkvox = require "wolkvox"
    local o = client_options(a, hooks)
    local c, err = wolkvox.new(o)
    if not c then
        error(err, 0)
    end
    if a.metrics_file then
        -- M.main writes the run's metrics from it at the end.
        a.metrics_run = { client = c, utc_offset = o.utc_offset }
    end
    return c
end

-- Write `rows` (an iterator of rows) as `fmt` to the output of `a`.
local function write_rows(a, fmt, columns, each)
    local out, err = output.open(a.output)
    if not out then
        fail(exit.LOCAL, err)
    end
    local w = assert(export.writer(fmt, out.file, { columns = columns, bom = a.bom }))
    local ok, e = pcall(function()
        each(function(row)
            if a.typed then
                row = coerce.row(row)
            end
            local okw, werr = w:write(row)
            if not okw then
                fail(exit.LOCAL, werr)
            end
        end)
        local okc, cerr = w:close()
        if not okc then
            fail(exit.LOCAL, cerr)
        end
        local okm, merr = out:commit()
        if not okm then
            fail(exit.LOCAL, merr)
        end
    end)
    if not ok then
        -- Rows of the windows finished before a failure are kept (exit 7).
        if errors.is(e) and e.partial and w:close() and out:commit() then
            error(e, 0)
        end
        w:discard()
        out:abort()
        error(e, 0)
    end
end

-- The rows of an answer `data`: a list is its rows; an object whose every
-- value is an object (an answer keyed by bucket, such as cdr_4's) is one row
-- per key, sorted, the key in a `key` column; any other object is one row.
local function rows_of(data)
    if type(data) ~= "table" then
        return { { value = data } }, false
    end
    if data[1] ~= nil or next(data) == nil then
        local out = {}
        for i, row in ipairs(data) do
            out[i] = type(row) == "table" and row or { value = row }
        end
        return out, false
    end
    local keys = {}
    for k, v in pairs(data) do
        if type(v) ~= "table" or v[1] ~= nil then
            return { data }, false
        end
        keys[#keys + 1] = k
    end
    sort(keys)
    local out = {}
    for i, k in ipairs(keys) do
        local row = { key = k }
        for f, v in pairs(data[k]) do
            row[f] = v
        end
        out[i] = row
    end
    return out, true
end

-- The columns of endpoint `name` as the command writes them: `key` first
-- for an answer keyed by bucket, `period` first with `per`.
local function columns_of(name, per)
    local e = registry.lookup(name)
    local cols = export.columns(name)
    if e and e.shape == "object" and e.dates then
        table.insert(cols, 1, "key")
    end
    if per then
        table.insert(cols, 1, "period")
    end
    return cols
end

-- ---- commands ---------------------------------------------------------------

local commands = {}

function commands.endpoints(a)
    if a.family and not registry.is_family(a.family) then
        fail(exit.USAGE, "unknown family '" .. a.family .. "'" .. registry.suggest(a.family, registry.families))
    end
    local rows = {}
    for _, e in ipairs(registry.endpoints) do
        if not a.family or e.family == a.family then
            local params = {}
            for _, q in ipairs(e.query or {}) do
                params[#params + 1] = q.name .. (q.required and "*" or "")
            end
            rows[#rows + 1] = { family = e.family, api = e.api, kind = e.kind, method = e.method,
                params = concat(params, " "), description = e.title }
        end
    end
    a.output = nil
    write_rows(a, a.format, { "family", "api", "kind", "method", "params", "description" }, function(put)
        for _, r in ipairs(rows) do
            put(r)
        end
    end)
end

function commands.call(a)
    local params = parameters(a.params)
    if a.body then
        local f = a.body == "-" and io.stdin or io.open(a.body, "rb")
        if not f then
            fail(exit.USAGE, "cannot read the body file " .. a.body)
        end
        local text = f:read("*a") or ""
        if f ~= io.stdin then
            f:close()
        end
        local ok, body = pcall(require("wolkvox.core").decode, text)
        if not ok or type(body) ~= "table" then
            fail(exit.USAGE, "the body is not a JSON object or array: " .. tostring(body))
        end
        params.body = body
    end
    local bar = progress.new(not a.no_progress and not a.quiet and progress.stderr_is_tty())
    local c = connect(a, { on_progress = bar.update, on_throttle = bar.throttle })
    local data, meta
    if a.all_pages then
        data, meta = c:all_pages(a.family .. "/" .. a.api, params, { max_pages = a.max_pages })
    else
        data, meta = c:call(a.family, a.api, params)
    end
    bar.clear()
    c:close()
    if data == nil then
        error(meta, 0)
    end
    local fmt = a.format
    local list = type(data) == "table" and (data[1] ~= nil or next(data) == nil)
    if fmt == "json" then
        local out, err = output.open(a.output)
        if not out then
            fail(exit.LOCAL, err)
        end
        if a.typed and type(data) == "table" then
            if list then
                local typed = {}
                for i, row in ipairs(data) do
                    typed[i] = type(row) == "table" and coerce.row(row) or coerce.value(row)
                end
                data = typed
            else
                data = coerce.row(data)
            end
        end
        local ok, werr = out.file:write(require("wolkvox.json").encode(data), "\n")
        if ok then
            ok, werr = out:commit()
        end
        if not ok then
            out:abort()
            fail(exit.LOCAL, werr)
        end
        return
    end
    local rows, keyed = rows_of(data)
    local columns = export.columns(a.family .. "/" .. a.api)
    if a.all_pages then
        columns = require("wolkvox.api.pages").columns(registry.find(a.family, a.api))
    end
    if keyed then
        table.insert(columns, 1, "key")
    end
    write_rows(a, fmt, columns, function(put)
        for _, row in ipairs(rows) do
            put(row)
        end
    end)
end

-- The most calls one command may plan without asking: 5 % of the day's
-- limit, or 50 calls while the limit is unknown (`--max-calls N` sets
-- another, `--yes` leaves only the library's own and the day's quota).
M.CEILING_SHARE, M.CEILING_UNKNOWN = 0.05, 50

local function ceiling(a, c, params)
    if params.max_calls ~= nil or a.yes then
        return
    end
    if a.max_calls then
        params.max_calls = a.max_calls
        return
    end
    local q = c:quota { measure = false }
    params.max_calls = q and q.limit and math.max(1, math.floor(M.CEILING_SHARE * q.limit)) or M.CEILING_UNKNOWN
end

local function report_params(a, c)
    local params = parameters(a.params)
    params.from, params.to, params.per = a.from, a.to, a.per
    ceiling(a, c, params)
    return params
end

local function dry_run(a, c)
    local p, err = c:plan(a.name, report_params(a, c))
    if not p then
        error(err, 0)
    end
    local lines = { format("%s: %s, %s%s", p.endpoint, words.count(#p.windows, "window"), words.count(p.calls, "call"),
        p.free and " (quota-free)" or "") }
    for _, w in ipairs(p.windows) do
        lines[#lines + 1] = format("  %s%s .. %s", w.label and (w.label .. "  ") or "", w.from, w.to)
    end
    local q = p.quota
    local spend = p.free and 0 or p.calls
    if q.limit then
        lines[#lines + 1] = format("quota: %d of %d used today (%s), %d left after this, %d kept in reserve",
            q.used, q.limit, q.source, math.max(0, q.limit - q.used - spend), q.reserve or 0)
    else
        lines[#lines + 1] = format("quota: %d used today (%s), the daily limit is unknown "
            .. "(set licenses or daily_limit, or run `wolkvox quota --measure`)", q.used, q.source)
    end
    lines[#lines + 1] = format("at most %s per plan", p.max_calls == math.huge and "unlimited calls"
        or words.count(p.max_calls, "call"))
    if p.refused then
        lines[#lines + 1] = "refused: " .. words.say(p.refused)
    end
    io.stdout:write(concat(lines, "\n"), "\n")
    if p.refused then
        local kind = q.limit and p.calls > (q.limit - q.used - (q.reserve or 0)) and "quota" or "params"
        fail(exit.BY_KIND[kind], words.say(p.refused))
    end
end

-- The rows written for a row of the answer: an answer keyed by bucket
-- (cdr_4) gives one row per bucket; typed when asked, with its period
-- under --per.  nil for an answer without rows ({} would be one empty row).
local function row_mapper(a)
    return function(row, window)
        local out = rows_of(row)
        for i, r in ipairs(out) do
            if a.typed then
                r = coerce.row(r)
            end
            if a.per then
                r.period = window.label
            end
            out[i] = r
        end
        return out[1] ~= nil and out or nil
    end
end

-- Whether rows need `map` on their way out: typed values, the period of
-- --per, or an answer keyed by bucket (one row per bucket).  Without it an
-- export to CSV takes the fast path (lines made from the answer's text).
local function needs_map(a)
    if a.typed or a.per then
        return true
    end
    local e = registry.lookup(a.name)
    return e == nil or e.shape == "object"
end

-- --delimiter: "tab" or "\t" is a tab; only with a CSV.
local function delimiter_of(a)
    local d = a.delimiter
    if d == nil then
        return nil
    end
    if d == "tab" or d == "\\t" then
        d = "\t"
    end
    if (a.format or "csv") ~= "csv" then
        fail(exit.USAGE, "--delimiter goes with --format csv")
    end
    if not export.DELIMITERS[d] then
        fail(exit.USAGE, "--delimiter is one of , ; | or tab (got '" .. d .. "')")
    end
    return d
end

-- A password in --into shows in ps and in the shell's history.
local function warn_password(a)
    local target = require("wolkvox.out.db").parse(a.into)
    if target and target.password and not a.quiet then
        say("warning: the password in --into shows in ps and in shell history: keep it in ~/.pgpass "
            .. "or $PGPASSWORD instead")
    end
end

-- A report loaded into a database: the rows typed by the schema (no map
-- but the period of --per), what was loaded said on stderr.
local function report_into(a, c)
    warn_password(a)
    for _, o in ipairs { "output", "checkpoint", "format", "bom", "typed", "delimiter" } do
        if a[o] then
            fail(exit.USAGE, "--" .. o .. " does not go with --into: the database keeps the rows, typed")
        end
    end
    local n, meta = c:export(a.name, report_params(a, c), { into = a.into, table = a.table,
        refresh = a.refresh or nil })
    if not n then
        error(meta, 0)
    end
    if not a.quiet then
        if meta.complete and meta.resumed then
            say(format("%s: this range is already in %s (table %s); nothing fetched (--refresh to fetch it again)",
                meta.endpoint, meta.into, meta.table))
        else
            say(format("%s: %d %s loaded into %s (table %s), %d %s", meta.endpoint, meta.written or n,
                (meta.written or n) == 1 and "row" or "rows", meta.into, meta.table, meta.calls or 0,
                meta.calls == 1 and "call" or "calls"))
        end
        if meta.open then
            say("warning: ", meta.open)
        end
    end
end

-- A report goes through c:export, as a script's would: to FILE (written
-- under a hidden name, renamed when whole; with --checkpoint, FILE.part
-- that a rerun goes on from), or to stdout.
function commands.report(a)
    local bar = progress.new(not a.no_progress and not a.quiet and progress.stderr_is_tty())
    local c = connect(a, { on_progress = bar.update, on_throttle = bar.throttle })
    local ok, err = pcall(function()
        if a.dry_run then
            return dry_run(a, c)
        end
        if a.into then
            return report_into(a, c)
        end
        if a.table or a.refresh then
            fail(exit.USAGE, (a.table and "--table" or "--refresh") .. " goes with --into (a database)")
        end
        local to_file = a.output and a.output ~= "-"
        -- -o FILE.xlsx / FILE.html without --format: the name says which.
        if not a.format and to_file then
            local ext = a.output:lower():match("%.(%w+)$")
            a.format = (ext == "xlsx" or ext == "html") and ext or (ext == "htm" and "html") or nil
        end
        if a.checkpoint and not to_file then
            fail(exit.USAGE, "--checkpoint needs --output FILE (a resumed export goes on from FILE.part, "
                .. "cut back to the last window the checkpoint vouches for)")
        end
        local delimiter = delimiter_of(a)
        if not to_file and (a.format == "xlsx" or a.format == "html") and progress.stderr_is_tty(1) then
            fail(exit.USAGE, "--format " .. a.format .. " writes a file, not text for a terminal: give -o FILE."
                .. a.format)
        end
        local n, meta = c:export(a.name, report_params(a, c), {
            delimiter = delimiter,
            format = a.format or "csv", output = to_file and a.output or nil,
            file = not to_file and io.stdout or nil, checkpoint = a.checkpoint,
            columns = columns_of(a.name, a.per), bom = a.bom,
            map = needs_map(a) and row_mapper(a) or nil,
        })
        if not n then
            error(meta, 0)
        end
        if meta.open and not a.quiet then
            say("warning: ", meta.open)
        end
    end)
    bar.clear()
    c:close()
    if not ok then
        error(err, 0)
    end
end

-- "600", "10m", "1h", "2d" -> seconds.
local function duration(name, v)
    if v == nil then
        return nil
    end
    local n, unit = tostring(v):match("^(%d+%.?%d*)([smhd]?)$")
    if not n then
        fail(exit.USAGE, name .. " takes seconds or a duration such as 90s, 10m, 1h, 2d (got '" .. v .. "')")
    end
    return tonumber(n) * ({ [""] = 1, s = 1, m = 60, h = 3600, d = 86400 })[unit]
end

-- A sync into a database: the state is there, no --state.
local function sync_into(a, c, params)
    warn_password(a)
    for _, o in ipairs { "output", "append", "bom", "typed", "delimiter" } do
        if a[o] then
            fail(exit.USAGE, "--" .. o .. " does not go with --into: the database keeps the rows, typed")
        end
    end
    if a.format ~= "csv" then
        fail(exit.USAGE, "--format does not go with --into: the database keeps the rows, typed")
    end
    local n, meta = c:sync(a.name, params, { into = a.into, table = a.table, stream = a.stream })
    if not n then
        error(meta, 0)
    end
    a.synced, a.synced_rows = meta, n
    if not a.quiet and not meta.skipped then
        if meta.up_to_date then
            say(format("%s: up to date in %s (table %s)", meta.endpoint, meta.into, meta.table))
        else
            say(format("%s: %d %s loaded into %s (table %s) up to %s, %d %s", meta.endpoint, n,
                n == 1 and "row" or "rows", meta.into, meta.table, tostring(meta.watermark), meta.calls or 0,
                meta.calls == 1 and "call" or "calls"))
        end
    end
end

-- Text on stdout, its write checked (a full disk, a closed pipe: exit 1).
local function stdout(text)
    local ok, err = io.stdout:write(text)
    if ok then
        ok, err = io.stdout:flush()
    end
    if not ok then
        fail(exit.LOCAL, "cannot write to stdout: " .. tostring(err))
    end
end

-- The streams of a plan's run for --metrics-file: this run's rows, and
-- from the plan's status the watermark (epoch, UTC), last success and
-- error, calls today.
local function plan_metrics(c, plan, res)
    local plan_job = require "wolkvox.job.plan"
    local dates = require "wolkvox.dates"
    local checked = plan_job.check(plan)
    local status = plan_job.status(c, checked)
    local offset = c._ctx.utc_offset or 0
    local out = {}
    for _, s in ipairs(checked.streams) do
        local st, sum = status[s.name] or {}, res.streams[s.name] or {}
        local wall = st.watermark and dates.parse(st.watermark)
        out[#out + 1] = { name = s.name, endpoint = s.endpoint, watermark = wall and wall - offset,
            rows = sum.rows or 0, last_success = st.last_success, calls_today = st.calls_today,
            last_error = sum.error and sum.error.kind or nil }
    end
    return out
end

-- `sync --plan FILE`: the streams in turns, a line each on stderr, the
-- budget at the end; exit 9 when the share is spent.
local function sync_plan(a)
    if a.name then
        fail(exit.USAGE, "--plan runs the streams its file names: give no report beside it")
    end
    for _, o in ipairs { "state", "since", "until", "lag", "overlap", "per", "output", "append", "into",
            "table", "stream", "typed", "bom" } do
        if a[o] then
            fail(exit.USAGE, "--" .. o .. " does not go with --plan: each stream says its own in the plan file")
        end
    end
    local plan_job = require "wolkvox.job.plan"
    local ok, plan = pcall(plan_job.read, a.plan)
    if not ok then
        error(plan, 0)
    end
    local c = connect(a)
    local res, err
    if a.dry_run then
        res, err = c:plan_cost(plan)
    else
        res, err = c:run_plan(plan, { on_turn = function(t)
            if a.quiet then
                return
            end
            if t.error then
                say(format("%s: %s", t.stream, tostring(t.error)))
            elseif a.verbose then
                say(format("%s: %d %s, %d %s%s", t.stream, t.rows, t.rows == 1 and "row" or "rows", t.calls,
                    t.calls == 1 and "call" or "calls", t.more and " (more to come)" or ""))
            end
        end })
    end
    if res and not a.dry_run then
        a.plan_streams = plan_metrics(c, plan, res)
    end
    c:close()
    if not res then
        error(err, 0)
    end
    if a.dry_run then
        local out = { format("%-16s %-26s %8s %8s", "stream", "endpoint", "backlog", "per day") }
        for _, row in ipairs(res.streams) do
            out[#out + 1] = format("%-16s %-26s %8d %8d", row.stream, row.endpoint, row.backlog, row.steady)
        end
        local b, takes = res.budget, "forever (a steady day takes the whole share)"
        if res.days then
            takes = res.days .. (res.days == 1 and " day" or " days")
        end
        out[#out + 1] = format("%d calls of backlog, %d a steady day; %s", res.backlog, res.steady,
            b and format("the plan's share is %d of %d calls a day: the backlog takes %s",
                math.floor(b.share * b.limit), b.limit, takes)
            or "the day's limit is unknown (licenses, daily_limit or quota --measure)")
        stdout(concat(out, "\n") .. "\n")
        return
    end
    local failed
    for name, s in pairs(res.streams) do
        if s.error and not failed then
            failed = { name = name, err = s.error }
        end
    end
    local b = res.budget
    if not a.quiet then
        local names = {}
        for name in pairs(res.streams) do
            names[#names + 1] = name
        end
        sort(names)
        for _, name in ipairs(names) do
            local s = res.streams[name]
            say(format("%s: %d %s, %d %s%s%s", name, s.rows, s.rows == 1 and "row" or "rows", s.calls,
                s.calls == 1 and "call" or "calls", s.watermark and (", up to " .. s.watermark) or "",
                s.done and ", up to date" or (s.error and ", failed" or ", more to come")))
        end
        say(format("budget: %d of %d calls used today; the plan keeps %d for everything else",
            b.used, b.limit, b.keep))
    end
    if res.stopped == "budget" then
        error({ cli_exit = exit.BUDGET, message = "the plan's share of today's quota is spent: what was "
            .. "fetched is kept, and the next run (the next day) goes on" }, 0)
    end
    if failed and errors.is(failed.err) then
        error(failed.err, 0)
    end
end

-- `status`: what each stream of a plan did last, and the day's budget.
function commands.status(a)
    local plan_job = require "wolkvox.job.plan"
    local c = connect(a)
    local okr, res = pcall(function()
        local q = assert(c:quota { measure = false })
        local out = { quota = q }
        if a.plan then
            local plan = plan_job.check(plan_job.read(a.plan))
            out.plan, out.budget = plan.name, plan_job.budget(c, plan)
            out.streams = {}
            local st = plan_job.status(c, plan)
            for _, s in ipairs(plan.streams) do
                local x = st[s.name] or {}
                out.streams[#out.streams + 1] = { stream = s.name, endpoint = s.endpoint, priority = s.priority,
                    watermark = x.watermark, rows = x.rows or 0, calls = x.calls or 0,
                    calls_today = x.day == q.day and x.calls_today or 0, last_success = x.last_success,
                    last_error = x.last_error, up_to_date = x.up_to_date }
            end
        end
        return out
    end)
    c:close()
    if not okr then
        error(res, 0)
    end
    if a.format == "json" then
        stdout(require("wolkvox.json").encode(res) .. "\n")
        return
    end
    local q, lines = res.quota, {}
    lines[#lines + 1] = format("quota %s: %d used%s%s", q.day, q.used, q.limit and (" of " .. q.limit) or "",
        q.remaining and (", " .. q.remaining .. " left") or " (limit unknown)")
    if res.budget then
        lines[#lines + 1] = format("plan %s: share %d%% (%d calls a day), %d kept for everything else, %d left "
            .. "for the plan today", res.plan, math.floor(res.budget.share * 100 + 0.5),
            res.budget.limit - res.budget.keep, res.budget.keep, res.budget.left)
    end
    if res.streams then
        lines[#lines + 1] = format("%-16s %-26s %-19s %9s %6s %-19s %s", "stream", "endpoint", "watermark", "rows",
            "today", "last success", "last error")
        for _, s in ipairs(res.streams) do
            lines[#lines + 1] = format("%-16s %-26s %-19s %9d %6d %-19s %s", s.stream, s.endpoint,
                s.watermark or "-", s.rows, s.calls_today,
                s.last_success and os.date("!%Y-%m-%d %H:%M:%S", s.last_success) or "-",
                s.last_error and (s.last_error.kind .. ": " .. s.last_error.message) or "-")
        end
    end
    stdout(concat(lines, "\n") .. "\n")
end

function commands.sync(a)
    if a.plan then
        return sync_plan(a)
    end
    if a.dry_run then
        fail(exit.USAGE, "--dry-run goes with --plan (for one report: wolkvox report ... --dry-run)")
    end
    if not a.name then
        fail(exit.USAGE, "sync needs a report (cdr_1) or --plan FILE")
    end
    local c = connect(a)
    local ok, err = pcall(function()
        local params = parameters(a.params)
        params.state, params.since, params["until"], params.per = a.state, a.since, a["until"], a.per
        params.lag, params.overlap = duration("--lag", a.lag), duration("--overlap", a.overlap)
        params.force = a.force or nil
        ceiling(a, c, params)
        if a.into then
            return sync_into(a, c, params)
        end
        if a.table or a.stream then
            fail(exit.USAGE, (a.table and "--table" or "--stream") .. " goes with --into (a database)")
        end
        if not a.state then
            fail(exit.USAGE, "--state FILE is needed: the file that remembers how far the sync got "
                .. "(or --into a database, which keeps it)")
        end
        local sink = { format = a.format, columns = columns_of(a.name, a.per), bom = a.bom,
            delimiter = delimiter_of(a),
            append = a.append or nil,
            map = row_mapper(a) }
        if a.output and a.output ~= "-" then
            sink.output = a.output
        else
            if a.append then
                fail(exit.USAGE, "--append needs --output FILE")
            end
            sink.file = io.stdout
        end
        -- A sync skipped for the polling interval warns through the logger.
        local n, err = c:sync(a.name, params, sink)
        if not n then
            error(err, 0)
        end
        a.synced, a.synced_rows = err, n
    end)
    c:close()
    if not ok then
        error(err, 0)
    end
end

-- The table a report loads into, or its JSON Schema: no call, no token.
function commands.schema(a)
    local e = registry.lookup(a.name)
    if not e then
        fail(exit.USAGE, "unknown report '" .. a.name .. "'")
    end
    local schema = require "wolkvox.api.schema"
    if a.table and not schema.valid_name(a.table) then
        fail(exit.USAGE, "--table must be a name of letters, digits and _ (at most 63), not starting with a digit")
    end
    local s, why = schema.of(e, { table = a.table })
    if not s then
        fail(exit.USAGE, why)
    end
    local text
    if a.dialect == "json-schema" then
        text = require("wolkvox.json").encode(schema.json_schema(s)) .. "\n"
    else
        text = concat(require("wolkvox.out.load").ddl(s, a.dialect), ";\n\n") .. ";\n"
    end
    local ok, err = io.stdout:write(text)
    if not ok then
        fail(exit.LOCAL, "cannot write to stdout: " .. tostring(err))
    end
end

function commands.quota(a)
    local c = connect(a)
    local s, err = c:quota({ measure = a.measure and true or false })
    c:close()
    if not s then
        error(err, 0)
    end
    -- What is left for calls: the day's remaining less the reserve.
    if s.remaining then
        s.available = math.max(0, s.remaining - (s.reserve or 0))
    end
    if a.format == "json" then
        stdout(require("wolkvox.json").encode(s) .. "\n")
        return
    end
    local keys = {}
    for k in pairs(s) do
        keys[#keys + 1] = k
    end
    sort(keys)
    for _, k in ipairs(keys) do
        io.stdout:write(k, ": ", tostring(s[k]), "\n")
    end
end

-- `wolkvox date WHEN`: the day (or time) WHEN names on the operation's
-- clock, so that scripts name their files by the same day the report covers.
function commands.date(a)
    local o = client_options(a)
    local offset = require("wolkvox.options").utc_offset(o.utc_offset or require("wolkvox.defaults").utc_offset)
    if not offset then
        fail(exit.USAGE, "utc_offset must be seconds east of UTC or \"-05:00\"")
    end
    local dates = require "wolkvox.dates"
    local wall, why = dates.parse(a.when, a["end"], offset)
    if not wall then
        fail(exit.USAGE, why)
    end
    local text = dates.iso(wall)
    io.stdout:write(a.time and text or text:sub(1, 10), "\n")
end

function commands.fake(a)
    local argv = {}
    if a.port then
        argv[#argv + 1], argv[#argv + 2] = "--port", tostring(a.port)
    end
    if a.rows_per_day then
        argv[#argv + 1], argv[#argv + 2] = "--rows-per-day", tostring(a.rows_per_day)
    end
    if a.scenario then
        argv[#argv + 1], argv[#argv + 2] = "--scenario", a.scenario
    end
    if a.idle_timeout then
        argv[#argv + 1], argv[#argv + 2] = "--idle-timeout", a.idle_timeout
    end
    local code = require("wolkvox.fake").main(argv)
    if code ~= 0 then
        fail(code, "the fake server stopped")
    end
end

-- "-7d" (seven days ago) looks like an option to the parser: after a date
-- option it becomes "--from=-7d", and as `date`'s argument it follows "--".
local DATE_OPTIONS = { ["--from"] = true, ["--to"] = true, ["--since"] = true, ["--until"] = true }
local function relative_days(list)
    local out = {}
    for _, w in ipairs(list) do
        if w:match("^%-%d+d$") then
            if DATE_OPTIONS[out[#out]] then
                out[#out] = out[#out] .. "=" .. w
            else
                out[#out + 1] = "--"
                out[#out + 1] = w
            end
        else
            out[#out + 1] = w
        end
    end
    return out
end

--- Run the command line `argv` (a list of strings, like `arg`).
-- @treturn number the exit code (see `wolkvox.cli.exit`)
function M.main(argv)
    local parser = args.parser()
    local list = {}
    for i = 1, #(argv or {}) do
        list[i] = argv[i]
    end
    list = relative_days(list)
    local okp, a = parser:pparse(list)
    if not okp then
        -- One line, naming the help to read.
        local cmd
        for _, w in ipairs(list) do
            if commands[w] then
                cmd = w
                break
            end
        end
        say(tostring(a), " (see: wolkvox ", cmd and (cmd .. " ") or "", "--help)")
        return exit.USAGE
    end
    -- SIGTERM (cron, systemd, kill) cleans up as Ctrl-C does: no temporary
    -- file left, a sync state consistent; exit 143.
    local core_ok, core = pcall(require, "wolkvox.core")
    if core_ok and core.catch_terminate then
        core.catch_terminate()
    end
    local ok, err = pcall(commands[a.command], a)
    -- The exit code of the run, its failure said on stderr.
    local function ended()
        if ok then
            return exit.OK
        end
        if type(err) == "table" and err.cli_exit then
            say(err.message)
            return err.cli_exit
        end
        if errors.is(err) and err.partial then
            -- With a checkpoint, `saved` counts the windows of earlier runs too.
            local done = err.partial.windows
            local saved = err.partial.saved or { windows = #done, to = done[#done] and done[#done].to }
            say("incomplete: ", words.say(err))
            local where = ""
            if err.partial.file then
                where = "; their rows are in " .. err.partial.file .. (a.checkpoint and "" or
                    " (not under the final name: the result is not whole)")
            end
            say(format("%s written, up to %s%s%s", words.count(saved.windows, "window"), tostring(saved.to), where,
                a.checkpoint and "; run the same command again to finish from the checkpoint" or ""))
            return exit.INCOMPLETE
        end
        if errors.is(err) then
            say(words.say(err))
            return exit.code(err)
        end
        -- The standalone interpreter's answer to SIGINT, raised once the
        -- transfer in flight was aborted (its checkpoint stays as it was).
        if tostring(err):find("interrupted!", 1, true) then
            if core_ok and core.terminated and core.terminated() then
                say("terminated (SIGTERM)")
                return exit.TERMINATED
            end
            say("interrupted")
            return exit.INTERRUPTED
        end
        say("internal error: ", tostring(err))
        return exit.LOCAL
    end
    local code = ended()
    -- The run's metrics (--metrics-file), whatever its outcome: the
    -- client's counters and the ledger's count (read, never measured: no
    -- call), and for a sync its stream.  A run that succeeded but could not
    -- write them exits 1, so that cron says so; a failed run keeps its code.
    local run = a.metrics_run
    if run then
        local metrics = require "wolkvox.out.metrics"
        local kind
        if not ok then
            kind = errors.is(err) and err.kind
                or type(err) == "table" and err.cli_exit and (({ "output", "params", "auth", "quota", "transport",
                    "truncated", "incomplete", "busy" })[err.cli_exit] or "failed")
                or (tostring(err):find("interrupted!", 1, true) and "interrupted" or "internal")
        end
        local stats = run.client:stats()
        local snapshot, now = { stats = stats, quota = stats.quota }, os.time()
        if a.command == "sync" and a.plan then
            snapshot.streams = a.plan_streams
        elseif a.command == "sync" then
            local e = registry.lookup(a.name)
            local meta, wall = a.synced, nil
            local dates = require "wolkvox.dates"
            if meta and meta.watermark then
                wall = dates.parse(meta.watermark)
            end
            local offset = require("wolkvox.options").utc_offset(run.utc_offset
                or require("wolkvox.defaults").utc_offset) or 0
            local name = a.stream or (a.state and (a.state:match("([^/]+)$"):gsub("%.[^.]*$", "")))
                or (meta and meta.table) or nil
            local endpoint = meta and meta.endpoint or e and e.name or a.name
            snapshot.streams = { { name = name ~= "" and name or endpoint, endpoint = endpoint,
                watermark = wall and wall - offset, rows = ok and (a.synced_rows or 0) or 0,
                last_success = ok and now or nil, last_error = kind or nil } }
        end
        local task = a.metrics_file:match("([^/]*)$"):gsub("%.prom$", "")
        local written, why = metrics.update_textfile(a.metrics_file, snapshot,
            { now = now, labels = { task = task ~= "" and task or "wolkvox" } })
        if not written then
            say("cannot write the metrics: ", tostring(why))
            if code == exit.OK then
                code = exit.LOCAL
            end
        end
    end
    return code
end

return M
