--- Checking the options of `wolkvox.new`.
-- Wrong types are programming errors and raise; a missing or malformed token
-- or server is an expected failure and comes back as a structured error.
-- Either way nothing has been sent.
-- @module wolkvox.options

local errors = require "wolkvox.errors"

local type, pairs, ipairs, tostring, tonumber, error, getenv =
    type, pairs, ipairs, tostring, tonumber, error, os.getenv

local M = {}

--- Known options and their types.
M.types = {
    server = "string",
    base_url = "string",
    token = "string",
    token_file = "string",
    timeout = "number",
    connect_timeout = "number",
    user_agent = "string",
    cainfo = "string",
    capath = "string",
    proxy = "string",
    verify = "boolean",
    max_bytes = "number",
    max_concurrent = "number",
    max_rows = "number",
    utc_offset = { number = true, string = true },
    transport = "string",
    -- retries and pacing
    retries = "number",
    retry_base = "number",
    retry_cap = "number",
    deadline = "number",
    min_interval = "number",
    -- the quota ledger and the pacing locks
    state_dir = { string = true, boolean = true },
    daily_limit = "number",
    licenses = "number",
    reserve = "number",
    -- hooks and logging
    on_request = "function",
    on_response = "function",
    on_retry = "function",
    on_throttle = "function",
    on_quota = "function",
    logger = { ["function"] = true, string = true },
    shared_dict = "string",
}

M.DEFAULTS = {
    timeout = 60,           -- the server's own limit per call
    connect_timeout = 10,
    max_bytes = 256 * 1024 * 1024,
    max_concurrent = 2,     -- wolkvox allows 2 calls in flight per token
    max_rows = 60000,       -- the API's silent cap: an answer this long is split again
    -- The operation's clock, seconds east of UTC.  wolkvox does not document
    -- it; its docs are written from Bogota (UTC-5, no DST), so that is the
    -- guess.  It only matters for os.time() numbers and the quota day.
    utc_offset = -5 * 3600,
    retries = 2,            -- 3 attempts in all for reads
    retry_base = 1,
    retry_cap = 30,
    min_interval = 0,
    reserve = 0,
}

--- The default directory of the quota ledger and pacing locks:
-- $XDG_CACHE_HOME/lua-wolkvox, or ~/.cache/lua-wolkvox.
function M.default_state_dir()
    local xdg = getenv("XDG_CACHE_HOME")
    if xdg and xdg ~= "" then
        return xdg .. "/lua-wolkvox"
    end
    local home = getenv("HOME")
    if home and home ~= "" then
        return home .. "/.cache/lua-wolkvox"
    end
    return nil
end

--- Seconds east of UTC for "+HH:MM" / "-HH:MM" (or a number of seconds).
function M.utc_offset(v)
    if type(v) == "number" then
        return v
    end
    local sign, h, m = v:match("^([+-])(%d%d?):?(%d%d)$")
    if not sign then
        return nil
    end
    local s = tonumber(h) * 3600 + tonumber(m) * 60
    return sign == "-" and -s or s
end

local function bad(name, msg)
    error("wolkvox.new: option '" .. name .. "' " .. msg, 4)
end

--- The base URL for a `server` value: a code ("0031"), "wv0031" or a URL.
-- @return the URL without a trailing slash, or nil and a message
function M.base_url(server)
    if server:match("^https?://") then
        local url = server:gsub("/+$", "")
        if url:find("[%s%c]") or not url:match("^https?://[%w%.%-%[%]:]+") then
            return nil, "server URL is malformed"
        end
        return url
    end
    local code = server:match("^[wW][vV](%d+)$") or server:match("^(%d+)$")
    if not code then
        return nil, "server must be a code such as \"0031\", \"wv0031\" or a base URL"
    end
    return "https://wv" .. code .. ".wolkvox.com"
end

local function read_token_file(path)
    local f, err = io.open(path, "rb")
    if not f then
        errors.throw("auth", { message = "cannot read token_file: " .. tostring(err) })
    end
    local s = f:read("*a") or ""
    f:close()
    return (s:gsub("^%s+", ""):gsub("%s+$", ""))
end

--- Check `opts` and return a normalised copy: `base_url`, `token` and the rest.
-- Raises (level of the caller of new) on wrong types and unknown names;
-- throws structured `auth`/`params` errors for missing values.
function M.check(opts)
    if opts == nil then
        opts = {}
    elseif type(opts) ~= "table" then
        error("wolkvox.new: options table expected, got " .. type(opts), 3)
    end
    local out = {}
    for k, v in pairs(opts) do
        local want = M.types[k]
        if want == nil then
            bad(tostring(k), "is unknown")
        end
        if type(want) == "table" then
            if not want[type(v)] then
                local names = {}
                for t in pairs(want) do
                    names[#names + 1] = t
                end
                table.sort(names)
                bad(k, "must be a " .. table.concat(names, " or a ") .. " (got " .. type(v) .. ")")
            end
        elseif type(v) ~= want then
            bad(k, "must be a " .. want .. " (got " .. type(v) .. ")")
        end
        out[k] = v
    end
    for k, v in pairs(M.DEFAULTS) do
        if out[k] == nil then
            out[k] = v
        end
    end
    -- x ~= x catches NaN.
    if out.timeout ~= out.timeout or out.timeout <= 0 then
        bad("timeout", "must be a positive number of seconds")
    end
    if out.connect_timeout ~= out.connect_timeout or out.connect_timeout <= 0 then
        bad("connect_timeout", "must be a positive number of seconds")
    end
    if out.max_bytes ~= out.max_bytes or out.max_bytes < 1 then
        bad("max_bytes", "must be at least 1")
    end
    if out.max_rows ~= out.max_rows or out.max_rows < 1 then
        bad("max_rows", "must be a positive number")
    end
    local offset = M.utc_offset(out.utc_offset)
    if not offset or offset < -14 * 3600 or offset > 14 * 3600 then
        bad("utc_offset", "must be seconds east of UTC or \"-05:00\"")
    end
    out.utc_offset = offset
    for _, k in ipairs { "retries", "retry_base", "retry_cap", "deadline", "min_interval", "reserve",
        "daily_limit", "licenses" } do
        local v = out[k]
        if v ~= nil and (v ~= v or v < 0) then
            bad(k, "must be a number of at least 0")
        end
    end
    if out.daily_limit == nil and out.licenses then
        out.daily_limit = out.licenses * 1000
    end
    if out.state_dir == true then
        bad("state_dir", "must be a directory or false")
    elseif out.state_dir == nil then
        out.state_dir = M.default_state_dir() or false
    end
    if type(out.logger) == "string" and out.logger ~= "stderr" and out.logger ~= "ngx" then
        bad("logger", "must be a function, \"stderr\" or \"ngx\"")
    end
    if out.max_concurrent ~= 1 and out.max_concurrent ~= 2 then
        bad("max_concurrent", "must be 1 or 2 (wolkvox allows 2 calls in flight per token)")
    end

    local server = out.base_url or out.server or getenv("WOLKVOX_SERVER")
    if server == nil or server == "" then
        errors.throw("params", {
            message = "no server: pass server = \"0031\" (or base_url), or set WOLKVOX_SERVER" })
    end
    local url, why = M.base_url(server)
    if not url then
        errors.throw("params", { message = why })
    end
    out.base_url, out.server = url, nil

    local token = out.token
    if token == nil and out.token_file then
        token = read_token_file(out.token_file)
    end
    if token == nil then
        token = getenv("WOLKVOX_TOKEN")
    end
    out.token, out.token_file = nil, nil
    if token == nil or token == "" then
        errors.throw("auth", {
            message = "no token: pass token = ..., token_file = ..., or set WOLKVOX_TOKEN" })
    end
    if token:find("[%c]") then
        -- Do not echo the token: a CR/LF in it would split the request header.
        errors.throw("auth", { message = "token contains control characters (CR, LF, ...)" })
    end
    return out, token
end

return M
