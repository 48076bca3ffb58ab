--- Metrics for Prometheus: a client's counters, the day's quota and the
-- freshness of sync streams in the text exposition format (version 0.0.4),
-- for node_exporter's textfile collector (`write_textfile`: what a cron job
-- leaves after each run; the CLI's `--metrics-file`) or an nginx location
-- (`serve_ngx`: the counters every worker keeps in the shared dict).
--
-- Names follow Prometheus' conventions: the `wolkvox_` prefix, `_total` for
-- counters, base units (seconds, bytes), a HELP and a TYPE line for each.
-- Labels are few and bounded: `endpoint` ("family/api") and `outcome`
-- (`ok` or an error kind) of calls, `stream` and `endpoint` of a sync, and
-- whatever constant labels the writer adds (the CLI's `task`).  No token,
-- no URL, no parameter ever becomes a label.  See docs/metrics.md.
-- @module wolkvox.out.metrics

local file = require "wolkvox.out.file"

local pairs, ipairs, tostring, tonumber, format, concat, sort, floor, huge, pcall =
    pairs, ipairs, tostring, tonumber, string.format, table.concat, table.sort, math.floor, math.huge, pcall

local M = {}

local STREAM = { "stream", "endpoint" }

--- The metric families, in the order they are written: `name`, `type`,
-- `help`, and for streams `labels`.  `carry`: a textfile keeps the value a
-- previous run wrote when this run has none (a failed sync keeps its
-- watermark and its last success); counters always add to it.
M.FAMILIES = {
    { name = "wolkvox_calls_total", type = "counter",
        help = "Calls to wolkvox that ended, by endpoint and outcome (ok or the error kind); "
            .. "each attempt of a retried call counts." },
    { name = "wolkvox_retries_total", type = "counter", help = "Attempts retried after a failure." },
    { name = "wolkvox_throttled_total", type = "counter",
        help = "Call starts that waited for the pacer (a slot of the token, or min_interval)." },
    { name = "wolkvox_response_bytes_total", type = "counter", help = "Bytes of the answers received." },
    { name = "wolkvox_rows_total", type = "counter", help = "Rows the answers handed over." },
    { name = "wolkvox_cache_hits_total", type = "counter", help = "Lookups the cache answered without a call." },
    { name = "wolkvox_calls_in_flight", type = "gauge", help = "Calls holding a slot of the token now." },
    { name = "wolkvox_quota_used_calls", type = "gauge",
        help = "Calls of the operation's daily quota used today (this machine's count unless measured today)." },
    { name = "wolkvox_quota_remaining_calls", type = "gauge", help = "Calls of the daily quota left today." },
    { name = "wolkvox_quota_limit_calls", type = "gauge", help = "The operation's daily quota of calls." },
    { name = "wolkvox_stream_watermark_timestamp_seconds", type = "gauge", labels = STREAM, carry = true,
        help = "How far the sync stream got: its watermark, in seconds since the epoch (UTC)." },
    { name = "wolkvox_stream_lag_seconds", type = "gauge", labels = STREAM,
        help = "Seconds from the stream's watermark to when this was written." },
    { name = "wolkvox_stream_rows_total", type = "counter", labels = STREAM,
        help = "Rows the sync stream delivered." },
    { name = "wolkvox_stream_last_success_timestamp_seconds", type = "gauge", labels = STREAM, carry = true,
        help = "When the stream's last successful run ended, in seconds since the epoch." },
    { name = "wolkvox_stream_last_run_outcome", type = "gauge", labels = { "stream", "endpoint", "outcome" },
        help = "The outcome of the stream's last run (ok or the error kind): 1 for it." },
    { name = "wolkvox_stream_calls_today", type = "gauge", labels = STREAM,
        help = "Calls the stream spent today." },
}

local BY_NAME = {}
for _, f in ipairs(M.FAMILIES) do
    BY_NAME[f.name] = f
end

--- A label value escaped as the format wants it: backslash, double quote
-- and line feed.
function M.escape(v)
    return (tostring(v):gsub("[\\\"\n]", { ["\\"] = "\\\\", ["\""] = "\\\"", ["\n"] = "\\n" }))
end

local function number(v)
    if v ~= v then
        return "NaN"
    elseif v == huge then
        return "+Inf"
    elseif v == -huge then
        return "-Inf"
    elseif v == floor(v) and v > -1e15 and v < 1e15 then
        return format("%d", v)
    end
    return format("%.17g", v)
end

-- The label text of `labels` (a table): sorted by name, so that one series
-- always reads the same (a previous file's values are found by it).
local function label_text(labels)
    local names = {}
    for k in pairs(labels) do
        names[#names + 1] = k
    end
    if #names == 0 then
        return ""
    end
    sort(names)
    for i, k in ipairs(names) do
        names[i] = k .. "=\"" .. M.escape(labels[k]) .. "\""
    end
    return "{" .. concat(names, ",") .. "}"
end

--- Samples of a text in the exposition format (a file this module wrote):
-- a list of `{ name, labels, value }`; lines it cannot read are skipped.
function M.parse(text)
    local out = {}
    for line in (text or ""):gmatch("[^\n]+") do
        local name, rest = line:match("^([%a_:][%w_:]*)(.*)$")
        if name then
            local labels, ok = {}, true
            if rest:sub(1, 1) == "{" then
                local i = 2
                while ok do
                    local k, j = rest:match("^%s*([%a_][%w_]*)%s*=%s*\"()", i)
                    if not k then
                        local close = rest:match("^%s*}()", i)
                        ok = close ~= nil
                        i = close
                        break
                    end
                    local v, n = {}, j
                    while true do
                        local c = rest:sub(n, n)
                        if c == "" then
                            ok = false
                            break
                        elseif c == "\\" then
                            local e = rest:sub(n + 1, n + 1)
                            v[#v + 1] = e == "n" and "\n" or e
                            n = n + 2
                        elseif c == "\"" then
                            n = n + 1
                            break
                        else
                            v[#v + 1] = c
                            n = n + 1
                        end
                    end
                    labels[k] = concat(v)
                    i = rest:match("^%s*,?()", n)
                end
                rest = ok and rest:sub(i) or ""
            end
            local value = tonumber((rest:match("^%s+(%S+)")))
            if ok and value then
                out[#out + 1] = { name = name, labels = labels, value = value }
            end
        end
    end
    return out
end

-- The samples of a snapshot, family by family: `into[name]` is a list of
-- `{ labels, value }`.
local function samples(snapshot, now)
    local into = {}
    local function put(name, labels, value)
        if value ~= nil then
            local list = into[name] or {}
            into[name] = list
            list[#list + 1] = { labels = labels, value = value }
        end
    end
    local s = snapshot.stats or {}
    for endpoint, per in pairs(s.by_endpoint or {}) do
        for outcome, n in pairs(per) do
            put("wolkvox_calls_total", { endpoint = endpoint, outcome = outcome }, n)
        end
    end
    put("wolkvox_retries_total", {}, s.retries)
    put("wolkvox_throttled_total", {}, s.throttled)
    put("wolkvox_response_bytes_total", {}, s.bytes)
    put("wolkvox_rows_total", {}, s.rows)
    put("wolkvox_cache_hits_total", {}, s.cache_hits)
    put("wolkvox_calls_in_flight", {}, s.in_flight)
    local q = snapshot.quota
    if q then
        put("wolkvox_quota_used_calls", {}, q.used)
        put("wolkvox_quota_remaining_calls", {}, q.remaining)
        put("wolkvox_quota_limit_calls", {}, q.limit)
    end
    for _, st in ipairs(snapshot.streams or {}) do
        local labels = { stream = st.name or st.endpoint, endpoint = st.endpoint }
        put("wolkvox_stream_watermark_timestamp_seconds", labels, st.watermark)
        put("wolkvox_stream_lag_seconds", labels, st.watermark and math.max(0, now - st.watermark))
        put("wolkvox_stream_rows_total", labels, st.rows)
        put("wolkvox_stream_last_success_timestamp_seconds", labels, st.last_success)
        put("wolkvox_stream_last_run_outcome", { stream = labels.stream, endpoint = st.endpoint,
            outcome = st.last_error or "ok" }, 1)
        put("wolkvox_stream_calls_today", labels, st.calls_today)
    end
    return into
end

--- The exposition text of `snapshot`.
-- @tparam table snapshot `{ stats = c:stats(), quota = the ledger's status
--   (c:quota { measure = false }), streams = { { name, endpoint, watermark
--   (epoch seconds, UTC), rows, last_success (epoch), last_error (a kind, or
--   nil: ok), calls_today }, ... } }`; every part may be missing (the
--   quota's limit is left out when unknown)
-- @tparam[opt] table opts `labels` (constant labels added to every series:
--   they tell one file's series from another's), `now` (epoch seconds, for
--   lags), `previous` (samples of the file this run replaces, `parse`'s:
--   counters add to them, a watermark and a last success this run has not
--   are kept, and the lag follows the watermark kept)
-- @treturn string the text, ending in a line feed
function M.render(snapshot, opts)
    opts = opts or {}
    local now = opts.now or os.time()
    local const = opts.labels or {}
    local into = samples(snapshot or {}, now)
    local function with_const(labels)
        local all = {}
        for k, v in pairs(const) do
            all[k] = v
        end
        for k, v in pairs(labels) do
            all[k] = v
        end
        return all
    end
    -- The previous file: counters add up; carried gauges stay when missing.
    local before = {}
    for _, p in ipairs(opts.previous or {}) do
        local f = BY_NAME[p.name]
        if f and (f.type == "counter" or f.carry) then
            before[p.name .. label_text(p.labels)] = p
        end
    end
    local lines = {}
    for _, f in ipairs(M.FAMILIES) do
        local series, order = {}, {}
        for _, smp in ipairs(into[f.name] or {}) do
            local labels = with_const(smp.labels)
            local key = label_text(labels)
            if not series[key] then
                order[#order + 1] = key
                series[key] = 0
            end
            series[key] = series[key] + smp.value
        end
        for id, p in pairs(before) do
            if p.name == f.name then
                local key = label_text(p.labels)
                if series[key] == nil then
                    order[#order + 1] = key
                    series[key] = p.value
                    if f.name == "wolkvox_stream_watermark_timestamp_seconds" then
                        -- The lag of a watermark kept from the last run.
                        local lag = "wolkvox_stream_lag_seconds"
                        into[lag] = into[lag] or {}
                        into[lag][#into[lag] + 1] = { labels = p.labels, value = math.max(0, now - p.value),
                            kept = true }
                    end
                elseif f.type == "counter" then
                    series[key] = series[key] + p.value
                end
                before[id] = nil
            end
        end
        if #order > 0 then
            sort(order)
            lines[#lines + 1] = "# HELP " .. f.name .. " " .. f.help:gsub("\\", "\\\\"):gsub("\n", "\\n")
            lines[#lines + 1] = "# TYPE " .. f.name .. " " .. f.type
            for _, key in ipairs(order) do
                lines[#lines + 1] = f.name .. key .. " " .. number(series[key])
            end
        end
    end
    return concat(lines, "\n") .. "\n"
end

--- Replace `path` with `text` as node_exporter's textfile collector wants
-- it: written whole under a hidden temporary name in the same directory
-- (`.NAME.tmp-...`, which the collector does not read: it reads `*.prom`),
-- then renamed over `path`, so a scrape sees the old file or the new one,
-- never a part.  The file is made 0666 less the umask (the collector runs
-- as another user).
-- @return true, or nil and an `output` error (a missing or unwritable
--   directory named)
function M.write_textfile(path, text)
    local ok, err = pcall(function()
        file.check(path, "the metrics file")
        local h = file.new(path)
        local done, why = h.file:write(text)
        if done then
            done, why = h.file:flush()
        end
        if not done then
            h:abort()
            require("wolkvox.errors").throw("output", { message = "cannot write the metrics file " .. path
                .. ": " .. tostring(why) })
        end
        done, why = h:commit()
        if not done then
            require("wolkvox.errors").throw("output", { message = why })
        end
    end)
    if not ok then
        return nil, err
    end
    return true
end

--- Render `snapshot` into `path`, adding to the counters of the file a
-- previous run left there (each cron run adds its calls, so the counters
-- only grow, as Prometheus expects) and keeping a stream's watermark and
-- last success when this run has none (a failed sync).  `opts` as `render`'s.
-- @return true, or nil and an error (see `write_textfile`)
function M.update_textfile(path, snapshot, opts)
    local o = {}
    for k, v in pairs(opts or {}) do
        o[k] = v
    end
    local f = io.open(path, "rb")
    if f then
        o.previous = M.parse(f:read("*a"))
        f:close()
    end
    return M.write_textfile(path, M.render(snapshot, o))
end

--- Inside nginx, answer the current request (a `content_by_lua*` handler)
-- with the counters every worker keeps in the shared dict and the day's
-- quota from the shared ledger:
--
--     location = /metrics {
--         content_by_lua_block { require("wolkvox.out.metrics").serve_ngx() }
--     }
--
-- @tparam[opt] table opts `dict` (the `lua_shared_dict`, default "wolkvox",
--   as the clients' `shared_dict`), `client` (a client whose ledger gives the
--   quota: fleet mode needs it), `labels` (constant labels)
function M.serve_ngx(opts)
    opts = opts or {}
    return require("wolkvox.transport.ngx").serve_metrics(function(snapshot)
        return M.render(snapshot, { labels = opts.labels })
    end, opts)
end

return M
