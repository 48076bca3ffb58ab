--- Checking the options of `wolkvox.new`.
-- Wrong types are programming errors and raise; a missing or malformed token
-- or server is an expected failure and comes back as a structured error.
-- Either way nothing has been sent.
-- @module wolkvox.options

local defaults = require "wolkvox.defaults"
local errors = require "wolkvox.errors"
local registry = require "wolkvox.api.registry"

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
    insecure = "boolean",   -- allow plain http / verify = false beyond this machine
    max_bytes = "number",
    max_concurrent = "number",
    max_rows = "number",
    max_calls = "number",   -- the most calls one plan may spend (default: see report.MAX_CALLS)
    utc_offset = { number = true, string = true },
    transport = "string",
    fake = "table",         -- transport = "fake": the fake server's settings, or wolkvox.transport.fake.server()
    -- retries and pacing
    retries = "number",
    retry_base = "number",
    retry_cap = "number",
    deadline = "number",
    min_interval = "number",
    server_limit = "number",
    -- the quota ledger and the pacing locks
    state_dir = { string = true, boolean = true },
    daily_limit = "number",
    licenses = "number",
    reserve = "number",
    prefer_measured = "boolean",
    -- where rows bound for a sink wait until their window is known whole
    spool_dir = { string = true, boolean = true },
    -- hooks and logging
    on_request = "function",
    on_response = "function",
    on_retry = "function",
    on_throttle = "function",
    on_quota = "function",
    on_progress = "function",   -- after each window, period or chunk of a call
    logger = { ["function"] = true, string = true },
    shared_dict = "string",
    gc_hold = "boolean",      -- the collector waits while an answer becomes rows
    cache = { table = true, boolean = true }, -- { ttl = seconds[, dict = name] }: keep lookup answers; false: off
    -- fleet mode: limits shared by every host through Redis
    redis = "string",         -- redis://[user:password@]host:port/db (rediss:// for TLS)
    redis_prefix = "string",  -- namespace of the keys (default "wolkvox:")
    redis_failure = "string", -- "refuse" (default) or "local"
    redis_cafile = "string",  -- CAs of a rediss:// server (outside nginx; default: the system's)
    redis_cert = "string",    -- this client's certificate for a rediss:// server that asks
    redis_key = "string",     -- its private key
}

--- The defaults every client's options are filled from (`wolkvox.defaults`,
-- fleet mode's apart: `wolkvox.defaults.FLEET`).
M.DEFAULTS = {}
for k, v in pairs(defaults) do
    if type(v) ~= "table" and type(v) ~= "function" and k:lower() == k then
        M.DEFAULTS[k] = v
    end
end

--- The default directory of the quota ledger and pacing locks
-- (`wolkvox.defaults.state_dir`).
M.default_state_dir = defaults.state_dir

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

-- Programming errors carry no position here: wolkvox.new raises them again
-- at level 2, so that they point at the caller's line.
local function bad(name, msg)
    error("wolkvox.new: option '" .. name .. "' " .. msg, 0)
end

--- True when `host` (lower case, IPv6 in brackets) is this machine:
-- localhost, 127.0.0.0/8 written as four decimal numbers, or [::1].
function M.is_loopback(host)
    host = host:lower()
    if host == "localhost" or host == "[::1]" then
        return true
    end
    local a, b, c, d = host:match("^(%d+)%.(%d+)%.(%d+)%.(%d+)$")
    return a == "127" and tonumber(b) <= 255 and tonumber(c) <= 255 and tonumber(d) <= 255
end

local function valid_name(host)
    if #host > 253 then
        return false
    end
    for label in (host .. "."):gmatch("([^.]*)%.") do
        if not label:match("^%w[%w%-]*$") or label:sub(-1) == "-" or #label > 63 then
            return false
        end
    end
    return true
end

--- Split a base URL into `scheme`, `host` (lower case), `port` and `path`
-- (without trailing slashes): only scheme://host[:port][/path], http or
-- https, a DNS name, an IPv4 address or a bracketed IPv6 address, and a path
-- of letters, digits and - . _ ~ /.  No user info, query or fragment.
-- @return the parts, or nil and a message
function M.parse_url(url)
    if url:find("[%z\1-\32\127-\255]") then
        return nil, "the URL holds spaces, control characters or non-ASCII bytes"
    end
    local scheme, rest = url:match("^(%a[%w+.%-]*)://(.*)$")
    if not scheme then
        return nil, "the URL must look like https://host[:port][/path]"
    end
    scheme = scheme:lower()
    if scheme ~= "http" and scheme ~= "https" then
        return nil, "the URL scheme must be https (or http for a local test server)"
    end
    if url:find("@", 1, true) then
        return nil, "user info ('@') is not allowed in the URL: the token goes only to the host it names"
    end
    local authority, path = rest:match("^([^/]*)(.*)$")
    local host, port
    if authority:sub(1, 1) == "[" then
        host, port = authority:match("^(%[[%x:%.]+%])(.*)$")
    else
        host, port = authority:match("^([%w%.%-]+)(.*)$")
        if host and not valid_name(host) then
            host = nil
        end
    end
    if not host then
        return nil, "the URL's host is missing or malformed"
    end
    if port ~= "" then
        port = port:match("^:(%d+)$")
        if not port or #port > 5 or tonumber(port) < 1 or tonumber(port) > 65535 then
            return nil, "the URL's port is malformed"
        end
        port = tonumber(port)
    else
        port = nil
    end
    path = path:gsub("/+$", "")
    if not path:match("^[%w%-%._~/]*$") then
        return nil, "the URL's path may hold only letters, digits and - . _ ~ / (no query or fragment)"
    end
    return { scheme = scheme, host = host:lower(), port = port, path = path }
end

local function join(u)
    return u.scheme .. "://" .. u.host .. (u.port and (":" .. u.port) or "") .. u.path
end

-- The parts of a `base_url` value (any host, see `parse_url`), or nil and a message.
local function base_url_parts(value)
    local u, why = M.parse_url(value)
    if not u then
        return nil, "base_url: " .. why
    end
    return u
end

local SERVER_FORMS = "server must be a code such as \"0031\", \"wv0031\" or https://wvNNNN.wolkvox.com"
    .. " (pass base_url for any other host)"

-- The parts of a `server` value, or nil and a message.
local function server_parts(server)
    if server:find("://", 1, true) then
        local u, why = M.parse_url(server)
        if not u then
            return nil, "server: " .. why
        end
        local wolkvox = u.host:match("^[%w%-%.]+%.wolkvox%.com$")
        if not wolkvox and not M.is_loopback(u.host) then
            return nil, SERVER_FORMS
        end
        return u
    end
    local code = server:match("^[wW][vV](%d+)$") or server:match("^(%d+)$")
    if not code or #code > 8 then
        return nil, SERVER_FORMS
    end
    return M.parse_url("https://wv" .. code .. ".wolkvox.com")
end

--- The base URL for a `server` value: a code ("0031"), "wv0031", an https
-- URL of a wolkvox.com host, or a URL of this machine (a test server).
-- @return the URL without a trailing slash, or nil and a message
function M.base_url(server)
    local u, why = server_parts(server)
    if not u then
        return nil, why
    end
    return join(u)
end

-- The host of a proxy option ("[scheme://][user:pass@]host[:port]"), or nil.
local function proxy_host(proxy)
    local rest = proxy:gsub("^%a[%w+.%-]*://", "")
    rest = rest:gsub("^[^/]*@", "")
    return rest:match("^(%[[%x:%.]+%])") or rest:match("^([^:/]+)")
end

-- Plain http and verify = false show the token to whoever is on the way:
-- allowed towards this machine only, unless insecure = true.
local function check_transport_security(out, u)
    if out.insecure then
        return
    end
    local weak = u.scheme == "http" and "plain http sends the token unencrypted"
        or out.verify == false and "verify = false lets anyone on the way pose as the server and read the token"
    if not weak then
        return
    end
    local host = u.host
    local local_ = M.is_loopback(host)
    if local_ and out.proxy then
        local p = proxy_host(out.proxy)
        local_ = p ~= nil and M.is_loopback(p)
        host = "the proxy"
    end
    if not local_ then
        errors.throw("params", { message = weak .. " to " .. host .. ": use https with verification, "
            .. "or pass insecure = true to allow it (test servers only)" })
    end
end

-- The fleet options: a well-formed Redis URL (never echoed: it may hold a
-- password), a prefix, a failure mode, the CAs of a TLS server and this
-- client's certificate for it.
local function check_fleet(out)
    if out.redis == nil then
        for _, k in ipairs { "redis_prefix", "redis_failure", "redis_cafile", "redis_cert", "redis_key" } do
            if out[k] ~= nil then
                bad(k, "needs the redis option")
            end
        end
        return
    end
    local ok, why = require("wolkvox.limits.redis").parse(out.redis)
    if not ok then
        errors.throw("params", { message = "option 'redis': " .. why })
    end
    for _, k in ipairs { "redis_cafile", "redis_cert", "redis_key" } do
        local v = out[k]
        if v ~= nil and (not ok.tls or v == "" or v:find("%z")) then
            bad(k, not ok.tls and "needs a rediss:// URL" or "must be a file's path")
        end
    end
    if (out.redis_cert == nil) ~= (out.redis_key == nil) then
        bad(out.redis_cert and "redis_key" or "redis_cert", "redis_cert and redis_key go together")
    end
    local prefix = out.redis_prefix
    if prefix ~= nil and (prefix == "" or #prefix > 64 or not prefix:match("^[%w%-%._:/]+$")) then
        bad("redis_prefix", "must be 1 to 64 letters, digits or - . _ : /")
    end
    out.redis_failure = out.redis_failure or defaults.FLEET.redis_failure
    if not require("wolkvox.limits.shared").FAILURE_MODES[out.redis_failure] then
        bad("redis_failure", "must be \"refuse\" or \"local\"")
    end
end

-- ---- files the user names: a token file, a config file ---------------------

--- The largest token file read (a token is a line of a few dozen bytes).
M.TOKEN_FILE_MAX = 4096
--- The largest config file read.
M.CONFIG_FILE_MAX = 1024 * 1024

local function quoted(path)
    return "'" .. path:gsub("'", "'\\''") .. "'"
end

-- The C core, when it is built (the specs and every transport but the
-- in-process fake have it).
local function core_module()
    local ok, core = pcall(require, "wolkvox.core")
    return ok and type(core) == "table" and core or nil
end

-- stat(1) of `path`, through symbolic links and without opening it: its
-- type ("regular file", "directory", "fifo", ...), size and permission
-- bits (an octal string); nil when it cannot be run or `path` is missing.
-- (Only where the C core has no `stat`.)
local function stat_l(path)
    local p = io.popen("stat -L -c '%F|%s|%a' -- " .. quoted(path) .. " 2>/dev/null")
    if not p then
        return nil
    end
    local line = p:read("*l")
    p:close()
    local kind, size, mode = (line or ""):match("^([^|]+)|(%d+)|(%d+)$")
    if not kind then
        return nil
    end
    return kind, tonumber(size), mode
end

--- The permission bits of `path` (through links) as an octal string, or nil.
function M.file_mode(path)
    local core = core_module()
    if core and core.stat then
        local st = core.stat(path, true)
        return st and string.format("%o", st.mode) or nil
    end
    local _, _, mode = stat_l(path)
    return mode
end

-- What `path` is, without opening it (a FIFO would block the open, a
-- device never end): "file" and its size; "missing"; "directory";
-- "other" and what it is (when known); or "error" and a message.  Through
-- symbolic links: the C core's stat, else its lstat for a path that is no
-- link and stat(1) for one that is.
local function file_kind(path)
    local core = core_module()
    if core and core.stat then
        local st, msg, code = core.stat(path, true)
        if not st then
            return code == "missing" and "missing" or "error", msg
        end
        if st.type == "file" or st.type == "directory" then
            return st.type, st.size
        end
        return "other"
    end
    if core and core.file_size then
        local size, msg, code = core.file_size(path)
        if size then
            return "file", size
        elseif code == "missing" then
            return "missing"
        elseif code ~= "link" then
            if not tostring(msg):find("is not a regular file", 1, true) then
                return "error", msg
            end
            -- Not a regular file: only a directory opens with a "/" after it.
            local d = io.open(path .. "/", "rb")
            if d then
                d:close()
                return "directory"
            end
            return "other", (stat_l(path))
        end
    end
    local kind, size = stat_l(path)
    if kind == "regular file" or kind == "regular empty file" then
        return "file", size
    elseif kind == "directory" then
        return "directory"
    elseif kind then
        return "other", kind
    end
    local f = io.open(path, "rb")   -- (only to tell a missing file from the rest)
    if f then
        f:close()
        return "error", path .. ": cannot tell what it is (stat(1) did not answer)"
    end
    return "missing"
end

--- Read a small file the user named, such as a token file or a config
-- file: a regular file (a symbolic link to one is followed) of at most
-- `cap` bytes.  Anything else is refused without being read: a FIFO (its
-- open would wait for a writer), a device (`/dev/zero` never ends), a
-- directory, a file too large.
-- @tparam string path
-- @tparam string what its name in messages ("token_file", "the config file")
-- @tparam number cap the largest size accepted (bytes)
-- @return the text; or nil, a message and why: "missing", "unreadable"
--   (no permission, ...) or "refused" (not a regular file, too large)
function M.read_small_file(path, what, cap)
    local kind, detail = file_kind(path)
    if kind == "missing" then
        return nil, what .. " " .. path .. ": no such file", "missing"
    elseif kind == "error" then
        return nil, what .. ": " .. tostring(detail), "unreadable"
    elseif kind == "directory" then
        return nil, what .. " " .. path .. " is a directory, not a file", "refused"
    elseif kind == "other" then
        return nil, what .. " " .. path .. " is not a regular file ("
            .. (detail and ("a " .. detail) or "a FIFO, a device or a socket") .. "): refused", "refused"
    elseif detail > cap then
        return nil, string.format("%s %s is %d bytes, more than the %d accepted: refused", what, path,
            detail, cap), "refused"
    end
    local f, err = io.open(path, "rb")
    if not f then
        return nil, what .. ": " .. tostring(err), "unreadable"
    end
    local text, rerr = f:read(cap + 1)
    f:close()
    if text == nil and rerr then
        return nil, what .. " " .. path .. ": " .. tostring(rerr), "unreadable"
    end
    text = text or ""
    if #text > cap then
        return nil, string.format("%s %s is more than the %d bytes accepted: refused", what, path, cap),
            "refused"
    end
    return text
end

-- Warn through `logger` (an option's value) when the file at `path` can
-- be read by group or others, as the CLI warns of such a config file.
local function warn_if_readable(logger, path, what)
    local log = logger and require("wolkvox.transport.select").logger(logger)
    if not log then
        return
    end
    local m = M.file_mode(path)
    if m and tonumber(m:sub(-2), 8) ~= 0 then
        pcall(log, "warn", string.format("the %s %s can be read by others (mode %s): chmod 600 it", what, path, m))
    end
end

local function read_token_file(path, logger)
    local text, err, why = M.read_small_file(path, "token_file", M.TOKEN_FILE_MAX)
    if not text then
        -- A path that names no file of ours is a setting to fix (params);
        -- one we may not read, or none, is a missing token (auth).
        errors.throw(why == "refused" and "params" or "auth", { message = why == "refused" and err
            or ("cannot read " .. err) })
    end
    warn_if_readable(logger, path, "token file")
    -- The first line only (without its "\n"), and a trimmed copy only when
    -- there is something to trim: the fewer strings hold the token, the
    -- sooner the collector can free them all.
    local line = text:match("^[^\n]*")
    text = nil -- luacheck: ignore 311 (drop the reference early)
    local token = line
    if line and (line:find("^%s") or line:find("%s$")) then
        token = line:match("^%s*(.-)%s*$")
    end
    line = nil -- luacheck: ignore 311 (drop the reference early)
    if token == nil or token == "" then
        errors.throw("auth", { message = "token_file: the token must be on the first line, which is empty" })
    end
    return token
end

--- Check `opts` and return a normalised copy: `base_url`, `token` and the rest.
-- Raises (a message without position: wolkvox.new raises it again at its
-- caller's line) on wrong types and unknown names;
-- throws structured `auth`/`params` errors for missing values.
function M.check(opts)
    if opts == nil then
        opts = {}
    elseif type(opts) ~= "table" then
        error("wolkvox.new: options table expected, got " .. type(opts), 0)
    end
    local out = {}
    for k, v in pairs(opts) do
        local want = M.types[k]
        if want == nil then
            bad(tostring(k), "is unknown" .. (type(k) == "string" and registry.suggest(k, M.types) or ""))
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
    if out.max_calls ~= nil and (out.max_calls ~= out.max_calls or out.max_calls < 1) then
        bad("max_calls", "must be a number of at least 1 (math.huge: no ceiling)")
    end
    for _, k in ipairs { "user_agent", "proxy", "cainfo", "capath" } do
        -- A CR or LF would end a header line and start another; the value
        -- is not echoed (a proxy URL may hold a password).
        if out[k] and out[k]:find("%c") then
            errors.throw("params", { message = "option '" .. k .. "' must not contain control characters "
                .. "(CR, LF, tab, NUL...)" })
        end
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
    -- How long a call the client gave up on may still run at the server.
    if out.server_limit ~= nil and not (out.server_limit >= 1 and out.server_limit <= 3600) then
        bad("server_limit", "must be seconds between 1 and 3600")
    end
    if out.spool_dir == true then
        bad("spool_dir", "must be a directory or false")
    elseif out.spool_dir == nil then
        out.spool_dir = defaults.spool_dir()
    end
    if out.state_dir == true then
        bad("state_dir", "must be a directory or false")
    elseif out.state_dir == nil then
        out.state_dir = M.default_state_dir() or false
    end
    if out.cache == true then
        bad("cache", "must be a table { ttl = seconds } or false")
    elseif out.cache == false then
        out.cache = nil
    elseif out.cache ~= nil then
        local ok, why = require("wolkvox.limits.cache").check(out.cache)
        if not ok then
            bad("cache", why)
        end
    end
    -- "stderr", or the name of a transport whose host has a log ("ngx").
    if type(out.logger) == "string" and not require("wolkvox.transport.select").logger(out.logger) then
        bad("logger", "must be a function, \"stderr\" or \"ngx\"")
    end
    check_fleet(out)
    if out.max_concurrent ~= 1 and out.max_concurrent ~= 2 then
        bad("max_concurrent", "must be 1 or 2 (wolkvox allows 2 calls in flight per token)")
    end

    local server = out.base_url or out.server or getenv("WOLKVOX_SERVER")
    if server == nil or server == "" then
        errors.throw("params", {
            message = "no server: pass server = \"0031\" (or base_url), or set WOLKVOX_SERVER" })
    end
    local u, why
    if out.base_url then
        u, why = base_url_parts(server)
    else
        u, why = server_parts(server)
    end
    if not u then
        errors.throw("params", { message = why })
    end
    check_transport_security(out, u)
    out.base_url, out.server, out.insecure = join(u), nil, nil

    local token = out.token
    if token == nil and out.token_file then
        token = read_token_file(out.token_file, out.logger)
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
