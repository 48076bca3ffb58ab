--- Rows for the fake server.
-- The five seed endpoints answer fixed, realistic rows.  Every other
-- endpoint answers rows synthesised from its registry field list, with every
-- value a string as wolkvox sends them.  Detail reports place one row every
-- 86400 / rows_per_day seconds of the wall clock, numbered from the epoch, so
-- any split of a range yields the same rows with the same ids: specs can check
-- windows for gaps and duplicates.
-- @module wolkvox.fake.data

local dates = require "wolkvox.dates"

local floor, ceil, format, lower, tostring = math.floor, math.ceil, string.format, string.lower, tostring

local M = {}

M.OPERATION = "demo_operation"

local SEEDS = {}

SEEDS["information/services"] = function()
    local row = {
        licenses = "25", pbx = "yes", screen_recording = "yes", video_call = "no",
        stereo_recording = "yes", gamification = "no", text_analytics = "no",
        speech_analytics = "yes", rsync = "no", wolkvox_storage = "yes", blob_storage = "no",
        aws_s3 = "no", intelligentdial = "yes", bi = "yes", customer_prot = "no",
        mr_wizard = "yes", turbo_dial = "no", sso = "no", mailgun = "no", whatsapp = "yes",
        facebook_page = "no", facebook_messenger = "yes", instagram_page = "no",
        instagram_chat = "no", sms_bidireccional = "yes", chat_web = "yes", telegram = "no",
        crm = "yes", email = "yes", cobrowsing = "no",
    }
    return { row }
end

SEEDS["information/routing_points"] = function()
    local names = { "IVR Principal", "Ventas Bogotá", "Soporte Técnico", "Cobranzas" }
    local rows = {}
    for i, name in ipairs(names) do
        rows[i] = {
            rp_id = tostring(1000 + i), rp_name = name,
            ivr_active = i ~= 4 and "yes" or "no", chat_active = i % 2 == 0 and "yes" or "no",
            interaction_active = "yes", crm_active = i == 1 and "yes" or "no",
            last_use = format("2026-11-%02d 1%d:2%d:0%d", 20 + i, i, i, i),
        }
    end
    return rows
end

local function billing(items)
    return function(now)
        local rows = {}
        local y, m = dates.fields(now)
        for i, it in ipairs(items) do
            rows[i] = { operation = M.OPERATION, description = it[1], items = it[2],
                date = format("%04d-%02d-01", y, m) }
        end
        return rows
    end
end

SEEDS["billing/rec_screen"] = billing { { "Screen recording", "18" } }
SEEDS["billing/chat_licenses"] = billing { { "Chat licenses", "12" }, { "Chat licenses (bots)", "3" } }
SEEDS["billing/interactions"] = billing { { "Omnibox interactions", "4521" } }

-- A deterministic pseudo-random number from a string and an integer.
local function hash(s, n)
    local h = 5381
    for i = 1, #s do
        h = (h * 33 + s:byte(i)) % 4294967296
    end
    return (h * 2654435761 + n * 40503) % 4294967296
end

local function hms(seconds)
    return format("%02d:%02d:%02d", floor(seconds / 3600), floor(seconds % 3600 / 60), seconds % 60)
end

--- A plausible string value for a field named `name` in row `n` at wall time `t`.
function M.value(name, n, t)
    local l = lower(name)
    local h = hash(l, n)
    if l == "date" or l:find("date") or l:find("fecha") or l == "last_use" or l == "updated"
            or l == "login" or l == "logout" or l:find("_at$") then
        return dates.iso(t)
    elseif l == "conn_id" or l == "id" or l == "customer_id" then
        return tostring(n)
    elseif l:find("_id$") or l:find("^id_") then
        return tostring(1000 + n % 97)      -- agents, skills, campaigns repeat
    elseif l == "time_seg" then
        return tostring(h % 3600)           -- seconds, as a number
    elseif l == "time_min" then
        return format("%.2f", h % 3600 / 60) -- minutes, as a decimal number
    elseif l:find("time") or l:find("aht") or l:find("duration") or l:find("tmo") then
        return hms(h % 3600)
    elseif l:find("percent") or l:find("occupancy") or l:find("level") or l:find("rate") then
        return format("%.2f %%", (h % 10000) / 100)
    elseif l:find("active") or l:find("enabled") then
        return h % 2 == 0 and "yes" or "no"
    elseif l:find("phone") or l:find("^tel") then
        return format("57300%07d", h % 10000000)
    elseif l:find("mail") then
        return format("user%d@example.com", n)
    elseif l:find("name") or l:find("description") then
        return format("%s %d", name, n % 40)
    end
    return tostring(h % 100)
end

--- Reply dates the catalog documents in another form than
-- "YYYY-MM-DD HH:MM:SS", by endpoint and field (its registry name).
M.DATE_FORMATS = {
    ["gamification/agents_kpi"] = { ["stats[].date"] = "YYYYmmdd" },
    ["reports_manager/diagram_1_2"] = { date = "YYYYMMDDHH", day = "YYYYMMDDHH" },
}

local DIGITS = { YYYYmmdd = 8, YYYYMMDDHH = 10 }

-- Wall time `t` in the form `fmt` names.
local function date_in(fmt, t)
    return (dates.iso(t):gsub("%D", "")):sub(1, DIGITS[fmt])
end

-- One row: plain fields, and nested lists/objects for "parent[].child" and
-- "parent.child" names; `formats` (field -> date form) as in DATE_FORMATS.
local function row_of(fields, n, t, formats)
    local row, lists, objects = {}, {}, {}
    for _, f in ipairs(fields) do
        local parent, child = f:match("^([^%[]+)%[%]%.(.+)$")
        if parent then
            local list = lists[parent]
            if not list then
                list = { {}, {} }
                lists[parent] = list
                row[parent] = list
            end
            if not child:find("[%[%.]") then
                local fmt = formats and formats[f]
                for i, item in ipairs(list) do
                    item[child] = fmt and date_in(fmt, t) or M.value(child, n * 10 + i, t)
                end
            end
        else
            local obj, key = f:match("^([^%.]+)%.(.+)$")
            if obj then
                objects[obj] = objects[obj] or {}
                row[obj] = objects[obj]
                objects[obj][key] = M.value(key, n, t)
            else
                local fmt = formats and formats[f]
                row[f] = fmt and date_in(fmt, t) or M.value(f, n, t)
            end
        end
    end
    return row
end
M.row_of = row_of

--- The row numbers of a detail report between wall times `ini` and `fin`
-- (inclusive): rows sit at floor(n * 86400 / per_day).
function M.slots(ini, fin, per_day)
    local first = ceil(ini * per_day / 86400)
    local last = ceil((fin + 1) * per_day / 86400) - 1
    return first, last
end

function M.slot_time(n, per_day)
    return floor(n * 86400 / per_day)
end

-- A step coprime with `total`: a walk by it visits `total` slots once each.
local function coprime_step(total)
    local function gcd(a, b)
        while b ~= 0 do
            a, b = b, a % b
        end
        return a
    end
    local step = 7919
    while gcd(step, total) ~= 1 do
        step = step + 2
    end
    return step
end

-- ---- periods of another density (the `rates` setting) ----------------------

-- The row layout of `cfg`: pieces { x0, c0, per_second } of a cumulative row
-- count C(t) (rows before wall second t), one row at every whole value of C.
-- `rows_per_day` everywhere, except in the `rates` periods.
local function layout(cfg)
    local base = cfg.rows_per_day / 86400
    local periods = {}
    for _, r in ipairs(cfg.rates) do
        local s = assert(dates.parse(r.from), "rates: bad from")
        local e = assert(dates.parse(r.to, true), "rates: bad to") + 1
        periods[#periods + 1] = { s = s, e = e, rate = (tonumber(r.rows_per_day) or 0) / 86400 }
    end
    table.sort(periods, function(a, b) return a.s < b.s end)
    local pieces, x, c = {}, 0, 0
    for _, p in ipairs(periods) do
        local s = math.max(p.s, x) -- overlapping periods: the earlier one wins
        if p.e > s then
            if s > x then
                pieces[#pieces + 1] = { x, c, base }
                c = c + base * (s - x)
            end
            pieces[#pieces + 1] = { s, c, p.rate }
            c = c + p.rate * (p.e - s)
            x = p.e
        end
    end
    pieces[#pieces + 1] = { x, c, base }
    return pieces
end

-- Rows before wall second t.
local function count_before(pieces, t)
    local p = pieces[1]
    for i = 2, #pieces do
        if pieces[i][1] > t then
            break
        end
        p = pieces[i]
    end
    return p[2] + p[3] * (math.max(t, p[1]) - p[1])
end

-- The wall second of row n: where C first reaches n.
local function time_of(pieces, n)
    for i = 1, #pieces do
        local p, nxt = pieces[i], pieces[i + 1]
        local c_end = nxt and nxt[2] or math.huge
        if p[3] > 0 and n < c_end then
            return floor(p[1] + math.max(0, n - p[2]) / p[3])
        end
    end
    return math.huge
end

-- The first and last row numbers between `ini` and `fin` (inclusive), and
-- a function giving a row's time.
local function rows_between(ini, fin, cfg)
    if type(cfg.rates) ~= "table" or #cfg.rates == 0 then
        local first, last = M.slots(ini, fin, cfg.rows_per_day)
        return first, last, function(n) return M.slot_time(n, cfg.rows_per_day) end
    end
    local pieces = layout(cfg)
    local function at(n) return time_of(pieces, n) end
    -- Candidates from the counts, then exactly by each row's own time.
    local first = math.max(0, floor(count_before(pieces, ini)) - 2)
    while at(first) < ini do
        first = first + 1
    end
    local last = first - 1
    while at(last + 1) <= fin do
        last = last + 1
    end
    return first, last, at
end

--- A text naming the `rates` of `cfg` (for the answer cache's key).
function M.rates_key(cfg)
    local out = {}
    for i, r in ipairs(type(cfg.rates) == "table" and cfg.rates or {}) do
        out[i] = tostring(r.from) .. "/" .. tostring(r.to) .. "/" .. tostring(r.rows_per_day)
    end
    return table.concat(out, ",")
end

--- Rows of a detail report, at most `limit` (the server's silent cap).
-- A capped window answers the first rows in time (`cfg.truncation` =
-- "prefix", the default) or (`"subset"`) rows from anywhere in the range,
-- in no order of time.
-- @return rows, total rows in the range (before the cap)
function M.detail(e, ini, fin, cfg, limit)
    local first, last, at = rows_between(ini, fin, cfg)
    local total = math.max(0, last - first + 1)
    local rows, count = {}, math.min(total, limit)
    local fields, formats = e.fields, M.DATE_FORMATS[e.name]
    local subset = cfg.truncation == "subset" and total > count
    local step = subset and coprime_step(total)
    for i = 1, count do
        local n = first + i - 1
        if subset then
            n = first + ((i - 1) * step + floor(total / 3)) % total
        end
        local t = at(n)
        if e.shape == "object" then
            rows[dates.iso(t)] = row_of(fields, n, t, formats) -- an object keyed by bucket (cdr_4)
        else
            rows[i] = row_of(fields, n, t, formats)
        end
    end
    return rows, total, count
end

--- An object answer keyed by bucket (cdr_4's shape): the rows of `list`,
-- each under the wall time its bucket starts, "YYYY-MM-DD HH:MM:SS", the
-- buckets spread evenly over [ini, fin].  Keys come from the range asked,
-- so two windows of a longer range never share a key, and a client that
-- joins windows and keeps only some of their keys shows it.
function M.keyed(list, ini, fin)
    local out, n = {}, #list
    for i, row in ipairs(list) do
        local key = dates.iso(ini + floor((i - 1) * (fin - ini + 1) / n))
        if out[key] ~= nil then
            key = key .. " #" .. i -- a range shorter than its buckets
        end
        out[key] = row
    end
    return out
end

--- Rows of an aggregate report: a few entities whose figures grow with the
-- span, so that splitting a range would change them.
function M.aggregate(e, ini, fin)
    local span_days = math.max(1, floor((fin - ini + 1) / 86400))
    local rows = {}
    for i = 1, 5 do
        local row = row_of(e.fields, i, ini, M.DATE_FORMATS[e.name])
        for _, f in ipairs(e.fields) do
            local l = lower(f)
            if l == "calls" or l:find("^total") or l:find("inbound$") or l:find("outbound$") then
                row[f] = tostring(span_days * 37 + i)
            end
        end
        rows[i] = row
    end
    return rows
end

--- The rows of a top-level `records[]` answer (campaign_15).
function M.records(e, now)
    local fields = {}
    for _, f in ipairs(e.fields) do
        local child = f:match("^records%[%]%.(.+)$")
        if child then
            fields[#fields + 1] = child
        end
    end
    local rows = {}
    for i = 1, 3 do
        rows[i] = row_of(fields, i, now)
    end
    return rows
end

-- One value in one of the vendor's odd forms, or as it was: a missing
-- duration as "-", a missing count as "--", a percentage past 1,000 with a
-- thousands separator, TIMEOUTACW as an activity code.  Ids and dates are
-- left alone (windows are checked by them).
-- A pseudo-random number from a field name and a row number, exact in
-- doubles (the same on LuaJIT and Lua 5.4).
local function mix(l, n)
    local h = 5381
    for i = 1, #l do
        h = (h * 33 + l:byte(i)) % 1000003
    end
    n = floor(n) % 1000003
    return (h * 7919 + n * 104729 + floor(n / 7)) % 1000003
end

local function odd(name, v, n)
    local l = lower(name)
    if l:find("id$") or l:find("^id") or l:find("date") or l:find("fecha") or l == "conn_id" then
        return v
    end
    local h = mix(l, n)
    if l:find("cod_act") and h % 7 == 0 then
        return "TIMEOUTACW"
    elseif v:match("^%d+%.%d%d %%$") and h % 5 == 0 then
        local x = 100000 + h % 900000 -- hundredths: 1,000.00 to 9,999.99
        return format("%d,%03d.%02d %%", floor(x / 100000), floor(x / 100) % 1000, x % 100)
    elseif v:match("^%d%d:%d%d:%d%d$") and h % 11 == 0 then
        return "-"
    elseif v:match("^%d+$") and h % 13 == 0 then
        return "--"
    end
    return v
end

--- Rows with some values in the vendor's odd forms (the setting `values =
-- "vendor"`): the same row (by `conn_id`, else its place) gets the same
-- values whichever window it comes in.
function M.vendor_values(v, n)
    if type(v) ~= "table" then
        return v
    end
    local own = tonumber(v.conn_id) or n or 0
    for k, x in pairs(v) do
        if type(x) == "table" then
            M.vendor_values(x, type(k) == "number" and (own * 100 + k) or own)
        elseif type(x) == "string" and type(k) == "string" then
            v[k] = odd(k, x, own)
        end
    end
    return v
end

--- True for the seed endpoints, whose rows are fixed.
function M.is_seed(e)
    return SEEDS[e.name] ~= nil
end

--- Data for endpoints without a range (lookups, snapshots) and for actions.
function M.plain(e, now)
    local seed = SEEDS[e.name]
    if seed then
        return seed(now)
    end
    if e.shape == "string" then
        return "OK"
    elseif e.shape == "none" then
        return nil
    elseif e.shape == "object" then
        return row_of(e.fields, 1, now)
    end
    local rows = {}
    for i = 1, 3 do
        rows[i] = row_of(e.fields, i, now)
    end
    return rows
end

return M
