--- The behaviour of the fake wolkvox server.
-- What the documented server does: the token check (401 without, 403 PLEASE
-- VALIDATE TOKEN for a wrong one), the envelope with string values and a
-- number or string `code` per endpoint, 400 for an unknown api or a missing
-- parameter, the 31-day rule, the silent row cap, 404 "Validate dates
-- entered" for an empty window, the 2-requests-per-token 403, and the daily
-- quota 403.  Where the vendor leaves a behaviour open (the exact text of the
-- 31-day and maintenance refusals) the fake picks one and says so in `MSG`.
--
-- Tests steer it through `/__fake/*` (see `control`) and a queue of faults:
-- `{ match = "services", delay = 2, status = 500, html = 502, bad_json = true,
--    cut = 100, reset = true, close = true, forbidden = "quota", redirect =
--    url, big = bytes, chunked = true, code_in_200 = 403, msg = text,
--    empty = true, gzip = true, retry_after = "3", echo = true, times = n }`.
-- @module wolkvox.fake.api

local cjson = require("cjson").new()
local safe = require("cjson.safe").new()
local data = require "wolkvox.fake.data"
local dates = require "wolkvox.dates"
local http = require "wolkvox.fake.http"
local registry = require "wolkvox.api.registry"
local rules = require "wolkvox.fake.rules"

local format, concat, tostring, tonumber, floor = string.format, table.concat, tostring, tonumber, math.floor

local M = {}

M.MSG = {
    no_token = "PLEASE ENTER THE WOLKVOX-TOKEN",
    bad_token = "PLEASE VALIDATE TOKEN",
    quota = "TOKEN LIMIT EXCEEDED",
    concurrency = "EXCEEDS THE LIMIT OF SIMULTANEOUS REQUESTS PER TOKEN (2)",
    maintenance = "THE SERVER IS IN MAINTENANCE, TRY AGAIN LATER",   -- assumed text
    unknown_api = "THE API YOU WANT TO CONSULT DOES NOT EXIST",
    missing = "SOME PARAMETERS ARE REQUIRED",
    empty = "Validate dates entered",
    range = "THE DATE RANGE CANNOT EXCEED 31 DAYS",                  -- assumed text
    range_hours = "THE DATE RANGE CANNOT EXCEED 24 HOURS",            -- assumed text
    call_limit = "THE REQUEST EXCEEDED THE MAXIMUM TIME OF %g SECONDS", -- assumed status and text
    answer_limit = "THE RESPONSE EXCEEDS THE MAXIMUM SIZE OF %d BYTES", -- assumed status and text
}

M.DEFAULTS = {
    tokens = { "test-token" },
    max_rows = 60000,
    rows_per_day = 100,
    rates = {},                 -- periods of another density: { { from =, to =, rows_per_day = } }
    max_days = 31,
    concurrency_limit = 2,
    daily_limit = false,        -- false: no quota enforced
    latency = 0,
    utc_offset = -5 * 3600,     -- America/Bogota, for the quota day
    disabled = {},              -- "family/api" names this server answers 404 for
    truncation = "prefix",      -- a capped window: "prefix" (the first rows in time) or "subset"
    chat_codes = { "1", "2", "3", "4", "5" }, -- codAct values codify_chat accepts
    ips = {},                   -- the firewall allow-list at start: { { ip =, permanent = "yes" } }
    storage_files = 25,         -- files list_files pages through
    chat_messages = 25,         -- messages of a conversations_today_by_customer chat
    fixtures = {},              -- recorded answers replayed: { { match =, params =, status =, body = } }
    values = "plain",           -- "vendor": some values in the vendor's odd forms ("-", "--", "9,336.00 %", TIMEOUTACW)
    answer_limit_bytes = 256 * 1024 * 1024, -- the documented 256 MB per answer (false: none)
    call_limit_seconds = 60,    -- the documented 60 s per call (false: none)
    whatsapp_interval = 20,     -- seconds between two send_message_mobil to one customer (false: none)
    recorded_until = false,     -- "YYYY-MM-DD HH:MM:SS": detail rows after it are not recorded yet (late rows)
}

--- The fields a fault may have (docs/fake.md describes each).
M.FAULT_FIELDS = { "match", "call", "times", "delay", "status", "msg", "body", "html", "forbidden", "empty",
    "code_in_200", "bad_json", "cut", "reset", "close", "redirect", "big", "gzip", "chunked", "retry_after",
    "echo" }

--- The control endpoints, `/__fake/<name>`.
M.CONTROL = { "log", "stats", "reset", "config", "faults", "scenario", "shutdown" }

local State = {}
State.__index = State

local function copy(t)
    local out = {}
    for k, v in pairs(t) do
        out[k] = type(v) == "table" and copy(v) or v
    end
    return out
end

--- Keys of a scenario besides the settings of `DEFAULTS`: `licenses` (the
-- daily limit is licences x 1000 unless `daily_limit` is given), `faults`
-- (the fault script, queued again on every reset), `name` and
-- `description` (for people).
M.SCENARIO_KEYS = { licenses = "number", faults = "table", name = "string", description = "string" }

-- Numbers decoded by lua-cjson are floats on 5.4: integral ones back to integers.
local function integral(v)
    if type(v) == "number" and v == floor(v) and math.tointeger then
        return math.tointeger(v) or v
    elseif type(v) == "table" then
        for k, x in pairs(v) do
            v[k] = integral(x)
        end
    end
    return v
end
M.integral = integral

--- Check a scenario (or settings) table: the table, or nil and what is wrong.
function M.check_scenario(t)
    if type(t) ~= "table" then
        return nil, "a scenario is a JSON object of settings"
    end
    for k, v in pairs(t) do
        local want = M.SCENARIO_KEYS[k]
        if want == nil and M.DEFAULTS[k] == nil then
            return nil, "unknown setting " .. tostring(k)
        end
        if want and type(v) ~= want then
            return nil, "setting " .. k .. " must be a " .. want
        end
    end
    if t.tokens ~= nil and (type(t.tokens) ~= "table" or #t.tokens == 0) then
        return nil, "setting tokens must be a non-empty list"
    end
    for _, f in ipairs(t.faults or {}) do
        if type(f) ~= "table" then
            return nil, "each fault is an object"
        end
    end
    return t
end

--- Read a scenario file (JSON): its settings, or nil and what is wrong.
function M.read_scenario(path)
    local f = io.open(path, "rb")
    if not f then
        return nil, "cannot read the scenario " .. tostring(path)
    end
    local text = f:read("*a")
    f:close()
    local v, err = safe.decode(text)
    if v == nil then
        return nil, "the scenario " .. tostring(path) .. " is not JSON: " .. tostring(err)
    end
    local ok, why = M.check_scenario(integral(v))
    if not ok then
        return nil, "the scenario " .. tostring(path) .. ": " .. why
    end
    return v
end

--- Decode JSON text with lua-cjson, null members of objects left out (as
-- the C core's decoder does): the value, or nil and a message.
function M.decode(text)
    local v, err = safe.decode(text)
    if v == nil then
        return nil, err
    end
    local null = safe.null
    local function clean(x)
        if type(x) == "table" then
            for k, y in pairs(x) do
                if y == null and type(k) == "string" then
                    x[k] = nil
                else
                    clean(y)
                end
            end
        end
        return x
    end
    return clean(v)
end

-- `config` is what the server was started with (settings, `licenses`,
-- `faults`); reset() returns to it.
function M.new(config, loop)
    local self = setmetatable({ loop = loop, base = config or {} }, State)
    self:reset()
    return self
end

--- The fake's wall clock (seconds, with fractions), for the limits that
-- count time between calls.
State.now = http.gettime

function State:reset()
    self.config = copy(M.DEFAULTS)
    for k, v in pairs(self.base) do
        if not M.SCENARIO_KEYS[k] then
            self.config[k] = type(v) == "table" and copy(v) or v
        end
    end
    if self.base.licenses and self.base.daily_limit == nil then
        self.config.daily_limit = self.base.licenses * 1000
    end
    self.log, self.faults, self.inflight, self.calls = {}, {}, {}, {}
    for _, f in ipairs(self.base.faults or {}) do
        self.faults[#self.faults + 1] = copy(f)
    end
    self.quota = { day = nil, used = 0, by_token = {} }
    self.stats = { requests = 0, max_inflight = 0, inflight = 0 }
    self.cache = {}
    self.sent_to = {}           -- send_message_mobil: the last send to each telephone
    self.ips = {}
    for _, item in ipairs(self.config.ips or {}) do
        if type(item) == "table" and item.ip then
            self.ips[item.ip] = { permanent = item.permanent == "yes" or item.permanent == true }
        end
    end
end

-- ---- answers ----------------------------------------------------------------

local function json_response(status, body, extra)
    local headers = { "Content-Type: application/json; charset=utf-8" }
    for _, h in ipairs(extra or {}) do
        headers[#headers + 1] = h
    end
    return { status = status, headers = headers, body = body }
end

-- The envelope with the code typed as the endpoint's vendor example types it.
local function envelope(code, code_type, msg, payload, err)
    local c
    code = format("%d", code) -- settings decoded by cjson arrive as floats
    if code_type == "string" then
        c = '"' .. code .. '"'
    elseif code_type == "empty" then
        c = '""'
    elseif code_type == "null" then
        c = "null"
    else
        c = code
    end
    local parts = { '{"code":', c, ',"error":', err and cjson.encode(err) or "null",
        ',"msg":', cjson.encode(msg or "") }
    if payload ~= nil then
        parts[#parts + 1] = ',"data":'
        if type(payload) == "table" and next(payload) == nil then
            parts[#parts + 1] = "[]"
        else
            parts[#parts + 1] = cjson.encode(payload)
        end
    end
    parts[#parts + 1] = "}"
    return concat(parts)
end
M.envelope = envelope

local function refuse(status, msg, extra)
    return json_response(status, envelope(status, "number", msg, nil, msg), extra)
end

local function html(status, title)
    return {
        status = status,
        headers = { "Content-Type: text/html" },
        body = format("<html><head><title>%d %s</title></head><body><center><h1>%d %s</h1>"
            .. "</center><hr><center>nginx</center></body></html>", status, title, status, title),
    }
end

local function gzip(body)
    local tmp = os.tmpname()
    local f = assert(io.open(tmp, "wb"))
    f:write(body)
    f:close()
    local p = assert(io.popen("gzip -c -n < '" .. tmp .. "'", "r"))
    local out = p:read("*a")
    p:close()
    os.remove(tmp)
    return out
end

-- Generated report answers are kept (up to 32 or 128 MB, oldest out first),
-- so repeated runs measure the client rather than the generator.
local CACHE_ENTRIES, CACHE_BYTES = 32, 128 * 1024 * 1024

function State:cached(key)
    for _, item in ipairs(self.cache) do
        if item.key == key then
            return item.body
        end
    end
end

function State:remember(key, body)
    local cache = self.cache
    cache[#cache + 1] = { key = key, body = body }
    local bytes = 0
    for _, item in ipairs(cache) do
        bytes = bytes + #item.body
    end
    while #cache > CACHE_ENTRIES or (bytes > CACHE_BYTES and #cache > 1) do
        bytes = bytes - #table.remove(cache, 1).body
    end
end

-- ---- faults -----------------------------------------------------------------

-- The first queued fault for this call: its `match` names the endpoint
-- (or is absent), and its `call`, if any, is this call's number `n` among
-- the calls of the endpoint since the last reset.
function State:take_fault(e_name, api, n)
    for i, f in ipairs(self.faults) do
        if (f.match == nil or f.match == api or f.match == e_name) and (f.call == nil or f.call == n) then
            f.times = (f.times or 1) - 1
            if f.times <= 0 then
                table.remove(self.faults, i)
            end
            return f
        end
    end
end

local FORBIDDEN = { quota = M.MSG.quota, concurrency = M.MSG.concurrency,
    token = M.MSG.bad_token, maintenance = M.MSG.maintenance }

-- The answer a fault forces (or the normal one, changed as the fault says).
function State:apply_fault(f, normal)
    local res = self:fault_answer(f, normal)
    if f.retry_after and res.headers then
        res.headers[#res.headers + 1] = "Retry-After: " .. tostring(f.retry_after)
    end
    return res
end

function State:fault_answer(f, normal)
    if f.delay then
        self.loop:sleep(f.delay)
    end
    if f.reset then
        return { reset = true }
    elseif f.close then
        return { close = true }
    elseif f.forbidden then
        return refuse(403, FORBIDDEN[f.forbidden] or f.forbidden)
    elseif f.redirect then
        return { status = 302, headers = { "Location: " .. f.redirect }, body = "" }
    elseif f.html then
        return html(f.html, http.REASONS[f.html] or "Error")
    elseif f.echo then
        -- A misconfigured proxy's debug page that echoes the request headers,
        -- token included: the client must not pass it on.
        local lines = {}
        for name, value in pairs(f.headers or {}) do
            lines[#lines + 1] = name .. ": " .. value
        end
        table.sort(lines)
        return { status = 502, headers = { "Content-Type: text/html" },
            body = "<html><body><pre>" .. table.concat(lines, "\n") .. "</pre></body></html>" }
    elseif f.bad_json then
        return json_response(200, '{"code":200,"error":null,"msg":"1 records were found","data":[{"a":"b",}')
    elseif f.empty then
        return refuse(404, M.MSG.empty)
    elseif f.code_in_200 then
        return json_response(200, envelope(f.code_in_200, "string", f.msg or "", nil, f.msg))
    elseif f.status then
        local msg = f.msg or (http.REASONS[f.status] or "Error")
        return json_response(f.status, f.body or envelope(f.status, "number", msg, nil, msg))
    elseif f.big then
        local pad = string.rep("x", 1000)
        local rows, n = {}, math.ceil(f.big / 1010)
        for i = 1, n do
            rows[i] = { pad = pad }
        end
        local res = json_response(200, envelope(200, "number", n .. " records were found", rows))
        res.chunked = f.chunked
        return res
    end
    local res = normal()
    if f.cut then
        res.cut = f.cut
    end
    if f.gzip and not self.in_process then -- in process there is no wire to compress
        res.body = gzip(res.body)
        res.headers[#res.headers + 1] = "Content-Encoding: gzip"
    end
    if f.chunked then
        res.chunked = true
    end
    return res
end

-- ---- the API ----------------------------------------------------------------

local function date_param(v)
    if type(v) ~= "string" or not v:match("^%d%d%d%d%d%d%d%d%d%d%d%d%d%d$") then
        return nil
    end
    return dates.parse(v)
end

-- The normal answer of endpoint `e` for `req`.
function State:answer(e, req, token)
    local cfg, params = self.config, req.params
    if e.name == "information/token_info" then
        -- What the real one reports: this token's calls today, every token's, the limit.
        local q = self.quota
        return json_response(200, envelope(200, e.code, "1 records were found", { {
            token_limit = format("%d", cfg.daily_limit or 25000), -- "100", not "100.0" from a JSON setting
            token_use_today = format("%d", q.by_token[token] or 0),
            all_token_today = format("%d", q.used),
            available_consumption_options = format("%d", math.max(0, (cfg.daily_limit or 25000) - q.used)),
        } }))
    end
    for _, p in ipairs(e.query) do
        if p.required and (params[p.name] == nil or params[p.name] == "") then
            return refuse(400, M.MSG.missing)
        end
    end
    local decoded
    if e.body and e.body.kind ~= "multipart" then
        decoded = safe.decode(req.body or "")
        if type(decoded) ~= "table" and not e.body.optional then
            return refuse(400, M.MSG.missing)
        end
    end
    do
        local status, msg = rules.check(e, req, decoded, self)
        if status then
            return json_response(status, envelope(status, e.code, msg, nil, msg))
        end
    end
    local now = dates.now(cfg.utc_offset)
    local payload, total, ini, fin
    if e.dates then
        ini, fin = date_param(params.date_ini), date_param(params.date_end)
        if not ini or not fin or fin < ini then
            return refuse(404, M.MSG.empty)
        end
        local limit_s = e.max_hours and e.max_hours * 3600 or cfg.max_days * 86400
        if fin - ini >= limit_s then
            return refuse(400, e.max_hours and M.MSG.range_hours or M.MSG.range)
        end
        if e.kind == "detail" then
            -- The cap: the server's, or the endpoint's own (diagram_9: 6,000).
            local cap = math.min(cfg.max_rows, e.max_rows or cfg.max_rows)
            -- Rows the server has not recorded yet are not answered.
            local recorded = type(cfg.recorded_until) == "string" and dates.parse(cfg.recorded_until)
            if recorded and recorded < fin then
                fin = recorded
            end
            local key = e.name .. "?" .. ini .. ":" .. fin .. ":" .. cfg.rows_per_day .. ":" .. cap
                .. ":" .. tostring(cfg.truncation) .. ":" .. tostring(cfg.values) .. ":" .. data.rates_key(cfg)
            local hit = self:cached(key)
            if hit then
                return json_response(200, hit)
            end
            local count
            payload, total, count = data.detail(e, ini, fin, cfg, cap)
            if cfg.values == "vendor" then
                data.vendor_values(payload)
            end
            if total == 0 then
                if e.name == "reports_manager/agent_13_1" then
                    -- Its table documents an empty list, not the 404 of the others.
                    return json_response(200, envelope(200, e.code, "0 records were found", {}))
                end
                return refuse(404, M.MSG.empty)
            end
            local body = envelope(200, e.code, count .. " records were found", payload)
            self:remember(key, body)
            return json_response(200, body)
        end
        payload = data.aggregate(e, ini, fin)
    else
        payload = data.plain(e, now)
    end
    if cfg.values == "vendor" and not data.is_seed(e) then
        data.vendor_values(payload)
    end
    local code, msg = 200
    if e.name == "wolkvox_storage/list_files" then
        payload = rules.list_files(decoded, cfg, now)
        if payload == nil then
            return json_response(400, envelope(400, e.code, rules.MSG.invalid_value, nil, rules.MSG.invalid_value))
        end
    elseif e.name == "whatsapp/conversations_today_by_customer" then
        payload = rules.conversation(decoded, cfg, now)
    elseif e.name == "campaign/add_record" and type(decoded) == "table" then
        payload = { { total_registers = tostring(#decoded) } }
    end
    if e.name == "information/activity_codes" then
        code = 0 -- the vendor's example answers "0"
        msg = #payload .. " records were found"
    elseif e.kind == "action" then
        code = e.method == "POST" and 201 or 202
        msg = "The request has been processed successfully"
    elseif e.family == "billing" then
        msg = "Information found for the current month"
    else
        msg = (type(payload) == "table" and #payload or 1) .. " records were found"
    end
    if e.shape == "bare_list" then
        return json_response(200, cjson.encode(payload))
    elseif e.shape == "top_level_records" then
        local records = data.records(e, now)
        return json_response(200, cjson.encode({ code = code, total_records = tostring(#records),
            campaign_id = params.campaign_id or "1", records = records }))
    elseif e.shape == "object" and e.dates and type(payload) == "table" and payload[1] then
        -- A report answered as an object keyed by bucket (cdr_4's example),
        -- each bucket under the time it starts: windows give different keys.
        payload = data.keyed(payload, ini, fin)
    elseif e.multi_status then
        payload, code = rules.delete_files(decoded)
    end
    return json_response(code == 207 and 207 or 200, envelope(code, e.code, msg, payload))
end

local function header_record(req)
    local out = {}
    for name, value in pairs(req.headers) do
        out[name] = name == "wolkvox-token" and "<redacted>" or value
    end
    return out
end

-- ---- recorded fixtures ---------------------------------------------------------

-- The first fixture for this request: its `match` names the endpoint ("api"
-- or "family/api") and every one of its `params` has the request's value.
function State:fixture(e_name, req)
    for _, fx in ipairs(self.config.fixtures or {}) do
        if type(fx) == "table" and (fx.match == e_name or fx.match == e_name:match("[^/]+$")) then
            local ok = true
            for k, v in pairs(type(fx.params) == "table" and fx.params or {}) do
                ok = ok and req.params[k] == tostring(v)
            end
            if ok then
                fx.body_is_text = type(fx.body) == "string"
                return fx
            end
        end
    end
end

--- Field names treated as personal data by `fixture_of` (Lua patterns,
-- matched against the lower-cased name).
M.PERSONAL = { "phone", "^tel", "telefono", "^ani$", "^dnis$", "customer", "cliente", "nombre", "mail",
    "address", "direccion", "^from", "^to$", "^toname$", "_nit$", "^nit$", "audio_text", "mensaje", "message",
    "^body$", "^answer$", "^subject$", "agent_name", "name_agent", "^ip$" }

local function personal(name, extra)
    local l = tostring(name):lower()
    for _, p in ipairs(M.PERSONAL) do
        if l:find(p) then
            return true
        end
    end
    for _, x in ipairs(extra or {}) do
        if l == tostring(x):lower() then
            return true
        end
    end
    return false
end

local function escape(s)
    return (s:gsub("[%^%$%(%)%%%.%[%]%*%+%-%?]", "%%%0"))
end

--- A fixture from an answer recorded from a real server: `decoded` (the
-- answer's JSON value) with every string under a personal field (at any
-- depth) replaced by "<field>", and `secret` (the token) masked in every
-- other string, keys and values.  `opts`: `match`, `params`, `status`,
-- `fields` (more personal field names), `name`.
function M.fixture_of(decoded, secret, opts)
    opts = opts or {}
    local pat = secret and secret ~= "" and escape(secret)
    local stars = pat and string.rep("*", #secret)
    local function mask(s)
        return pat and (s:gsub(pat, stars)) or s
    end
    local function strip(v, key, hide)
        if type(v) == "string" then
            return hide and ("<" .. key .. ">") or mask(v)
        elseif type(v) == "table" then
            local out = {}
            for k, x in pairs(v) do
                if type(k) == "string" then
                    local h = hide or personal(k, opts.fields)
                    out[mask(k)] = strip(x, hide and key or mask(k), h)
                else
                    out[k] = strip(x, key, hide)
                end
            end
            return out
        end
        return v
    end
    return { name = opts.name, match = opts.match, params = opts.params, status = opts.status or 200,
        body = strip(decoded, nil, false) }
end

-- True when endpoint `name` ("family/api") is not enabled on this server.
function State:disabled(name)
    for _, d in ipairs(self.config.disabled or {}) do
        if d == name or name:match("[^/]+$") == d then
            return true
        end
    end
    return false
end

function State:token_status(req)
    local t = req.headers["wolkvox-token"]
    if t == nil or t == "" then
        return "missing", nil
    end
    for _, ok in ipairs(self.config.tokens) do
        if t == ok then
            return "ok", t
        end
    end
    return "bad", nil
end

function State:quota_spend(e, token)
    local cfg = self.config
    local day = floor(dates.now(cfg.utc_offset) / 86400)
    if self.quota.day ~= day then
        self.quota.day, self.quota.used, self.quota.by_token = day, 0, {}
    end
    if e and e.free then
        return true
    end
    if cfg.daily_limit and self.quota.used >= cfg.daily_limit then
        return false
    end
    self.quota.used = self.quota.used + 1
    if token then
        self.quota.by_token[token] = (self.quota.by_token[token] or 0) + 1
    end
    return true
end

--- Handle one API request (path /api/v2/<family>.php); `proxied` is the
-- host[:port] of a request that named the fake as its HTTP proxy.
function State:api(req, conn, family, proxied)
    local now = http.gettime()
    local entry = {
        seq = #self.log + 1, conn = conn.id, port = conn.port, method = req.method,
        line = req.line, family = family, api = req.params.api, params = req.params,
        headers = header_record(req), body = req.body, t_start = now, proxied = proxied,
    }
    self.log[#self.log + 1] = entry
    self.stats.requests = self.stats.requests + 1
    local function finish(res)
        entry.status = res.status or (res.reset and "reset") or (res.close and "closed")
        entry.t_done = http.gettime()
        return res
    end
    if not registry.is_family(family) then
        return finish(html(404, "Not Found"))
    end
    local status, token = self:token_status(req)
    entry.token = status
    if status == "missing" then
        return finish(refuse(401, M.MSG.no_token))
    elseif status == "bad" then
        return finish(refuse(403, M.MSG.bad_token))
    end
    local e = registry.find(family, req.params.api or "")
    if e and self:disabled(e.name) then
        entry.refused = "disabled"
        return finish(refuse(404, rules.MSG.disabled))
    end
    local busy = self.inflight[token] or 0
    entry.inflight = busy + 1
    if busy >= self.config.concurrency_limit then
        entry.refused = "concurrency"
        return finish(refuse(403, M.MSG.concurrency))
    end
    if not self:quota_spend(e, token) then
        entry.refused = "quota"
        return finish(refuse(403, M.MSG.quota))
    end
    entry.quota_used = self.quota.used
    self.inflight[token] = busy + 1
    self.stats.inflight = self.stats.inflight + 1
    if self.stats.inflight > self.stats.max_inflight then
        self.stats.max_inflight = self.stats.inflight
    end
    local e_name = e and e.name or family .. "/" .. tostring(req.params.api)
    self.calls[e_name] = (self.calls[e_name] or 0) + 1
    entry.call = self.calls[e_name]
    local ok, res = pcall(function()
        local fault = self:take_fault(e_name, req.params.api, entry.call)
        -- The server's own time limit: a call that would take longer is
        -- stopped at it (the fault that made it slow is used up).
        local limit = self.config.call_limit_seconds
        if limit and self.config.latency + (fault and tonumber(fault.delay) or 0) > limit then
            entry.fault, entry.refused = fault, "call_limit"
            self.loop:sleep(limit)
            return refuse(500, format(M.MSG.call_limit, limit))
        end
        if self.config.latency > 0 then
            self.loop:sleep(self.config.latency)
        end
        local function normal()
            local fx = self:fixture(e_name, req)
            if fx then
                entry.fixture = fx.name or true
                return fx.body_is_text and json_response(fx.status or 200, fx.body)
                    or json_response(fx.status or 200, cjson.encode(fx.body))
            end
            if e == nil then
                return refuse(400, M.MSG.unknown_api)
            end
            return self:answer(e, req, token)
        end
        if fault then
            entry.fault = fault
            if fault.echo then
                fault = setmetatable({ headers = req.headers }, { __index = fault })
            end
            return self:apply_fault(fault, normal)
        end
        return normal()
    end)
    if not ok then
        entry.error = tostring(res)
        res = html(500, "Internal Server Error")
    end
    -- The server's own size limit on an answer.
    local max = self.config.answer_limit_bytes
    if max and type(res.body) == "string" and #res.body > max then
        entry.refused = "answer_limit"
        res = refuse(500, format(M.MSG.answer_limit, max))
    end
    -- The call stays in flight until its answer has left.
    res.after = function()
        -- A reset while this request was in flight started the counts anew.
        self.inflight[token] = math.max(0, (self.inflight[token] or 1) - 1)
        self.stats.inflight = math.max(0, self.stats.inflight - 1)
        entry.t_end = http.gettime()
    end
    return finish(res)
end

-- ---- control ----------------------------------------------------------------

-- The settings as /__fake/config shows them: tokens are secrets, only their count goes out.
function State:public_config()
    local out = {}
    for k, v in pairs(self.config) do
        out[k] = v
    end
    out.tokens = nil
    out.token_count = #self.config.tokens
    return out
end

--- Handle /__fake/<what>: log, stats, reset, config, faults, scenario, shutdown.
function State:control(req, what)
    local body = integral(safe.decode(req.body ~= "" and req.body or "{}") or {})
    if what == "log" then
        return json_response(200, #self.log == 0 and "[]" or cjson.encode(self.log))
    elseif what == "stats" then
        local s = copy(self.stats)
        s.quota_used = self.quota.used
        return json_response(200, cjson.encode(s))
    elseif what == "reset" then
        self:reset()
        return json_response(200, '{"ok":true}')
    elseif what == "config" then
        for k, v in pairs(body) do
            if M.DEFAULTS[k] == nil and k ~= "quota_used" then
                return json_response(400, cjson.encode({ error = "unknown setting " .. k }))
            end
            if k == "quota_used" then
                self:quota_spend(nil)
                self.quota.used = tonumber(v) or 0
            else
                self.config[k] = v
            end
        end
        return json_response(200, cjson.encode(self:public_config()))
    elseif what == "faults" then
        for _, f in ipairs(body.faults or {}) do
            self.faults[#self.faults + 1] = f
        end
        return json_response(200, cjson.encode({ queued = #self.faults }))
    elseif what == "scenario" then
        -- The settings the server started with, overlaid by the scenario's;
        -- everything else starts anew (log, quota, faults: the script's).
        local sc, why = M.check_scenario(integral(body))
        if not sc then
            return json_response(400, cjson.encode({ error = why }))
        end
        self.start = self.start or self.base
        local base = copy(self.start)
        for k, v in pairs(sc) do
            base[k] = v
        end
        self.base = base
        self:reset()
        return json_response(200, cjson.encode(self:public_config()))
    elseif what == "shutdown" then
        self.loop:stop()
        return json_response(200, '{"ok":true}')
    end
    return json_response(404, '{"error":"unknown control endpoint"}')
end

--- Call control endpoint `what` with the table `body` (as POST
-- /__fake/<what> would): the decoded answer; raises on an error answer.
function State:call(what, body)
    local res = self:control({ body = cjson.encode(body or {}) }, what)
    local v = safe.decode(res.body)
    if res.status ~= 200 then
        error("fake control " .. what .. " answered " .. tostring(res.status) .. ": " .. tostring(res.body), 2)
    end
    return v
end

--- The request handler for wolkvox.fake.http.
function State:handler()
    return function(req, conn)
        -- A request line in absolute form ("GET http://host/api/v2/...")
        -- comes to a proxy: the fake stands in for the proxy and the server
        -- behind it, and logs the host the client asked for (`proxied`).
        local proxied, path = req.path:match("^[hH][tT][tT][pP]://([^/]+)(/.*)$")
        if proxied then
            req.path = path
        end
        local family = req.path:match("^/api/v2/([%w_]+)%.php$")
        if family then
            return self:api(req, conn, family, proxied)
        end
        local what = req.path:match("^/__fake/(%w+)$")
        if what then
            return self:control(req, what)
        end
        return html(404, "Not Found")
    end
end

return M
