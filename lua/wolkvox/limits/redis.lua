--- Fleet mode: the token's slots, the start spacing and the day's count in
-- Redis, shared by every host that names the same server (the backend
-- contract is in `wolkvox.limits.shared`).
--
-- Slots are leases: `SET key holder NX PX lease` inside a server-side
-- script that tries each slot of the token, so two hosts never take the
-- same one; a host that dies frees its slots when the lease ends.  A call
-- abandoned in flight keeps its slot until its start + `server_limit` (the
-- key is kept that long, marked abandoned).  The day's count is one
-- `INCRBY` counter per operation and day on the operation's clock, kept a
-- week.  Keys are `<prefix>slot:{<token id>}:1`, `<prefix>pace:{<token
-- id>}`, `<prefix>calls:{<operation id>}:<day>` and
-- `<prefix>measured:{<operation id>}:<day>`, and beside a count
-- `<prefix>adds:calls:{<operation id>}:<day>` (each adder's last batch: a
-- batch sent again is added once): fingerprints only, and the braces keep
-- a token's keys in one slot of a Redis Cluster.
--
-- The connection comes from a connector: outside nginx the `wolkvox.redis`
-- C module (hiredis), inside nginx the ngx transport's (the Redis protocol
-- on cosockets).  Passwords stay in a closure: they are in no field, message
-- or log line.
-- @module wolkvox.limits.redis

local transport = require "wolkvox.transport"

local setmetatable, tostring, tonumber, format, type, pcall, require, ipairs, max, floor, char =
    setmetatable, tostring, tonumber, string.format, type, pcall, require, ipairs, math.max, math.floor,
    string.char

local M = {}

--- The namespace of the keys unless `redis_prefix` says otherwise.
M.DEFAULT_PREFIX = require("wolkvox.defaults").FLEET.redis_prefix

--- How long a day's count is kept (seconds): a week.
M.KEEP = 7 * 86400

--- Extra seconds of a live call's lease beyond max(timeout, server_limit).
M.LEASE_MARGIN = 5

local function unescape(s)
    return (s:gsub("%%(%x%x)", function(h) return char(tonumber(h, 16)) end))
end

--- Split a Redis URL: `redis://[user[:password]@]host[:port][/db]`, or
-- `rediss://` for TLS.
-- @treturn table `tls`, `host` (IPv6 without brackets), `port`, `db`,
-- `user` (or nil), `where` (the URL without credentials), `pool` (a name
-- for a connection pool: the URL without credentials and a fingerprint of
-- them), `password()` (a function: nil when none); or nil and a message
-- that does not repeat the URL
function M.parse(url)
    if type(url) ~= "string" or url:find("[%z\1-\32\127]") then
        return nil, "the redis URL holds spaces or control characters"
    end
    local scheme, rest = url:match("^(%a+)://(.*)$")
    scheme = scheme and scheme:lower()
    if scheme ~= "redis" and scheme ~= "rediss" then
        return nil, "the redis option must look like redis://[user:password@]host:port/db (or rediss:// for TLS)"
    end
    local userinfo, hostpart = rest:match("^(.*)@([^@]*)$")
    if not userinfo then
        hostpart = rest
    end
    local user, password
    if userinfo then
        local u, p = userinfo:match("^([^:]*):(.*)$")
        if u then
            user, password = u, p
        else
            -- "redis://secret@host": a password alone, as redis-cli reads it.
            password = userinfo
        end
        user = user and user ~= "" and unescape(user) or nil
        password = password and password ~= "" and unescape(password) or nil
    end
    local host, port = hostpart:match("^%[([%x:%.]+)%](.*)$")
    if not host then
        host, port = hostpart:match("^([%w%.%-]+)(.*)$")
    end
    local db
    if not host then
        return nil, "the redis URL's host is missing or malformed"
    end
    port, db = port:match("^:?(%d*)/?(%d*)$")
    if not port then
        return nil, "the redis URL must end in host[:port][/db]"
    end
    port, db = tonumber(port) or 6379, tonumber(db) or 0
    if port < 1 or port > 65535 then
        return nil, "the redis URL's port is out of range"
    end
    local shown = host:find(":", 1, true) and ("[" .. host .. "]") or host
    local where = format("%s://%s:%d/%d", scheme, shown, port, db)
    local cred = transport.fingerprint("wolkvox-redis:" .. (user or "") .. ":" .. (password or ""))
    return { tls = scheme == "rediss", host = host, port = port, db = db, user = user, where = where,
        pool = where .. "#" .. cred:sub(1, 16), password = function() return password end }
end

-- What a reply is, for a message (never its content: a hostile server
-- could put anything there).
local function shape(v)
    local t = type(v)
    if v == false or v == nil then
        return "nil"
    elseif t == "number" then
        return "an integer"
    elseif t == "string" then
        return "a string"
    elseif t == "table" then
        return "an array of " .. #v
    end
    return t
end

--- The message of a reply of the wrong type: `command` answered with `v`
-- where `expected` was expected.
function M.unexpected(command, v, expected)
    return format("Redis answered %s with %s where %s was expected", command, shape(v), expected)
end

--- Authenticate and choose the database on a fresh connection `conn`
-- (anything with `command(...)`, see `connector`).
-- @return true, or nil and a message (the server's, which never repeats
--   the password)
function M.handshake(conn, cfg)
    local password = cfg.password()
    if password then
        local ok, err
        if cfg.user then
            ok, err = conn:command("AUTH", cfg.user, password)
        else
            ok, err = conn:command("AUTH", password)
        end
        if not ok then
            return nil, "authentication refused: " .. tostring(err)
        elseif type(ok) ~= "string" then
            return nil, "authentication failed: " .. M.unexpected("AUTH", ok, "OK")
        end
    end
    if cfg.db ~= 0 then
        local ok, err = conn:command("SELECT", cfg.db)
        if not ok then
            return nil, "cannot select database " .. cfg.db .. ": " .. tostring(err)
        elseif type(ok) ~= "string" then
            return nil, "cannot select database " .. cfg.db .. ": " .. M.unexpected("SELECT", ok, "OK")
        end
    end
    return true
end

--- The connector outside nginx: `connect(cfg, timeout [, at])` -> a
-- connection with `command(...)` (the `wolkvox.redis` C module, hiredis),
-- ready for commands; or nil and why it cannot be (the module is not built,
-- or the URL asks for TLS and it was built without OpenSSL).  `at` (a time
-- of `wolkvox.redis.clock()`) ends the connection and its authentication,
-- and every command after, at the latest (see `Backend:command`).  A
-- rediss:// server's certificate is verified against `cfg.cafile`, else the
-- system's CAs; a server that asks for this client's certificate gets
-- `cfg.cert` (`cfg.key`).
function M.connector(cfg)
    local ok, client = pcall(require, "wolkvox.redis")
    if not ok then
        return nil, "the redis option needs the wolkvox.redis module, built from src/redis.c when hiredis "
            .. "is installed (Debian libhiredis-dev, then make)"
    end
    if cfg.tls and not client.tls then
        return nil, "rediss:// needs TLS, and this wolkvox.redis was built without OpenSSL "
            .. "(install libssl-dev and build again; or use redis:// over a trusted network)"
    end
    return function(c, timeout, at)
        if at then
            local left = at - client.clock()
            if left <= 0 then
                return nil, "no time was left to connect to Redis"
            end
            timeout = math.min(timeout, left)
        end
        local conn, err = client.connect(c.host, c.port, timeout,
            c.tls and { cafile = c.cafile, cert = c.cert, key = c.key } or nil)
        if not conn then
            return nil, err
        end
        if at then
            conn:deadline(at)
        end
        local done, why = M.handshake(conn, c)
        if not done then
            conn:close()
            return nil, why
        end
        return conn
    end
end

-- The server-side scripts.  Each runs atomically.
local SCRIPTS = {
    -- KEYS: the token's slots.  ARGV: holder, lease ms, poll ms.
    -- A live holder's slot counts as `poll` of wait, an abandoned one ("~")
    -- as what is left of its time.
    take = [[
local wait = -1
for i, k in ipairs(KEYS) do
  if redis.call('SET', k, ARGV[1], 'NX', 'PX', ARGV[2]) then return {i, 0} end
  local w = tonumber(ARGV[3])
  local v = redis.call('GET', k)
  if v and string.sub(v, 1, 1) == '~' then w = redis.call('PTTL', k) end
  if w >= 0 and (wait < 0 or w < wait) then wait = w end
end
return {0, wait}
]],
    -- KEYS: a slot.  ARGV: holder, ms to keep it (0: free it now).
    free = [[
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if tonumber(ARGV[2]) > 0 then
  redis.call('SET', KEYS[1], '~', 'PX', ARGV[2])
else
  redis.call('DEL', KEYS[1])
end
return 1
]],
    -- KEYS: the start key.  ARGV: interval ms.  -1: claimed; else ms to wait.
    claim = [[
if redis.call('SET', KEYS[1], '1', 'NX', 'PX', ARGV[1]) then return -1 end
local t = redis.call('PTTL', KEYS[1])
if t < 1 then t = 1 end
return t
]],
    -- KEYS: a counter, the last batch of each adder.  ARGV: n, seconds to
    -- keep them, the adder's id ("": none), its batch number.  A batch sent
    -- again (its answer was lost) is added once.
    add = [[
if ARGV[3] ~= '' then
  local last = tonumber(redis.call('HGET', KEYS[2], ARGV[3]) or '0')
  if tonumber(ARGV[4]) <= last then
    return tonumber(redis.call('GET', KEYS[1]) or '0')
  end
  redis.call('HSET', KEYS[2], ARGV[3], ARGV[4])
  redis.call('EXPIRE', KEYS[2], ARGV[2])
end
local v = redis.call('INCRBY', KEYS[1], ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[2])
return v
]],
}

local Backend = {}
Backend.__index = Backend

--- A Redis backend.
-- @tparam table opts `cfg` (from `parse`), `connect` (a connector's
--   function), `prefix` (default `DEFAULT_PREFIX`), `timeout` (seconds for
--   a connection and a reply)
function M.new(opts)
    return setmetatable({ cfg = opts.cfg, connect = opts.connect, prefix = opts.prefix or M.DEFAULT_PREFIX,
        timeout = opts.timeout or 5, where = opts.cfg.where, shas = {}, seq = 0 }, Backend)
end

Backend.__tostring = function(self)
    return "wolkvox.limits.redis (" .. self.where .. ")"
end

-- One command; a broken connection is replaced once (a server restarted
-- since the last command closed it before reading anything).  A connection
-- that failed in any other way than an error reply is dropped: one that
-- timed out or sent what is not a reply is never read again, nor asked again
-- (each try may wait for the whole timeout).  Inside an operation (`take`,
-- `free`, ...) every command, and a connection made for them, ends by the
-- operation's deadline (`self.at`) when the connection can be told it.
function Backend:command(...)
    local err
    for _ = 1, 2 do
        local fresh = false
        if not self.conn then
            local conn, why = self.connect(self.cfg, self.timeout, self.at)
            if not conn then
                return nil, why
            end
            self.conn, fresh = conn, true
        end
        if self.conn.deadline then
            self.conn:deadline(self.at)
        end
        local r, why, kind = self.conn:command(...)
        if r ~= nil then
            return r
        elseif kind == "reply" then
            return nil, why, kind
        end
        self:close()
        err = kind == "timeout" and format("Redis did not answer within %g s (%s)", self.timeout, why) or why
        if fresh or kind ~= "io" then
            break
        end
    end
    return nil, err
end

-- A reply `r` to `command` of the wrong type: the connection is dropped
-- (the server that sent it is not trusted with the next command).
function Backend:unexpected(command, r, expected)
    self:close()
    return nil, M.unexpected(command, r, expected)
end

local function integer(v)
    return type(v) == "number" and v == floor(v) and v > -2 ^ 53 and v < 2 ^ 53
end

-- A script by name: EVALSHA, loaded first when the server does not know it
-- (a first use, or a server restarted since).
function Backend:script(name, keys, ...)
    local n = #keys
    local args = { n }
    for i, k in ipairs(keys) do
        args[i + 1] = self.prefix .. k
    end
    for i = 1, select("#", ...) do
        args[n + 1 + i] = (select(i, ...))
    end
    for _ = 1, 2 do
        local sha = self.shas[name]
        if not sha then
            local why
            sha, why = self:command("SCRIPT", "LOAD", SCRIPTS[name])
            if sha == nil then
                return nil, why
            elseif type(sha) ~= "string" or not sha:find("^%x+$") or #sha ~= 40 then
                return self:unexpected("SCRIPT LOAD", sha, "a script id (40 hexadecimal digits)")
            end
            self.shas[name] = sha
        end
        local r, why, kind = self:command("EVALSHA", sha, (table.unpack or unpack)(args)) -- luacheck: ignore 143
        if r ~= nil or not (kind == "reply" and tostring(why):find("^NOSCRIPT")) then
            return r, why
        end
        self.shas[name] = nil
    end
    return nil, "the server keeps forgetting its scripts"
end

local function ms(seconds)
    return max(1, floor(seconds * 1000 + 0.5))
end

-- A holder id no other take shares (fingerprinted: nothing of this
-- process is shown).
function Backend:holder()
    self.seq = self.seq + 1
    return transport.fingerprint(format("%s %s %d %.17g", tostring(self), tostring({}), self.seq,
        math.random()))
end

--- Take the first free slot of `keys` for `lease` seconds.
-- @return the slot's number and its holder id, or false and the seconds to
--   wait (at most `lease`), or nil and a message
function Backend:take(keys, lease, poll)
    local holder = self:holder()
    local r, err = self:script("take", keys, holder, ms(lease), ms(poll))
    if r == nil then
        return nil, err
    elseif type(r) ~= "table" or #r ~= 2 or not integer(r[1]) or not integer(r[2])
            or r[1] < 0 or r[1] > #keys then
        return self:unexpected("EVALSHA (take)", r, "an array of 2 integers, a slot and a wait")
    end
    if r[1] ~= 0 then
        return r[1], holder
    end
    -- (No slot is kept longer than a lease: a longer wait is not Redis's.)
    return false, r[2] >= 0 and math.min(r[2] / 1000, lease) or poll
end

--- Free slot `key` taken by `holder`, or keep it busy `keep` seconds.
function Backend:free(key, holder, keep)
    local r, err = self:script("free", { key }, holder, keep > 0 and ms(keep) or 0)
    if r == nil then
        return nil, err
    elseif not integer(r) then
        return self:unexpected("EVALSHA (free)", r, "an integer")
    end
    return true
end

--- Claim a start: true, or false and the seconds until `interval` passed
-- (at most `interval`).
function Backend:claim(key, interval)
    local r, err = self:script("claim", { key }, ms(interval))
    if r == nil then
        return nil, err
    elseif not integer(r) then
        return self:unexpected("EVALSHA (claim)", r, "an integer")
    end
    if r < 0 then
        return true
    end
    -- (A start is kept `interval` at most: a longer wait is not Redis's.)
    return false, math.min(r / 1000, interval)
end

--- Add `n` to counter `key`, kept `keep` seconds: the new count.  With
-- `id` and `batch` (an adder's name and its batches' numbers, rising), a
-- batch that was added already is not added again.
function Backend:add(key, n, keep, id, batch)
    local r, err = self:script("add", { key, "adds:" .. key }, n, keep, id or "", batch or 0)
    if r == nil then
        return nil, err
    elseif not integer(r) then
        return self:unexpected("EVALSHA (add)", r, "an integer")
    end
    return r
end

--- The value of `key`, or false.
function Backend:get(key)
    local r, err = self:command("GET", self.prefix .. key)
    if r == nil then
        return nil, err
    elseif r ~= false and type(r) ~= "string" then
        return self:unexpected("GET", r, "a string or nil")
    end
    return r
end

--- Set `key` to `value` for `keep` seconds.
function Backend:put(key, value, keep)
    local r, err = self:command("SET", self.prefix .. key, value, "EX", keep)
    if r == nil then
        return nil, err
    elseif type(r) ~= "string" then
        return self:unexpected("SET", r, "OK")
    end
    return true
end

-- Each operation of the contract has `timeout` seconds for all it sends:
-- its deadline is on the clock of the C module (wolkvox.redis.clock), whose
-- connections take it (conn:deadline); a connection without `deadline`
-- (the ngx connector's) has its own timeouts only.
local clock
for _, name in ipairs { "take", "free", "claim", "add", "get", "put" } do
    local op = Backend[name]
    Backend[name] = function(self, ...)
        if clock == nil then
            local ok, client = pcall(require, "wolkvox.redis")
            clock = ok and client.clock or false
        end
        self.at = clock and clock() + self.timeout or nil
        local a, b, c = op(self, ...)
        self.at = nil
        return a, b, c
    end
end

--- Close the connection (a later command opens another).
function Backend:close()
    if self.conn then
        pcall(self.conn.close, self.conn)
        self.conn = nil
    end
end

--- Give the pacer's and the ledger's options (`p`, `q`, from a transport's
-- `state`) the Redis backend for checked options `o`, `token_id` and
-- `operation_id`; `connector` makes connections (default: `connector`,
-- the C module).  Raises a `params` error when Redis cannot be used here.
function M.attach(o, token_id, operation_id, p, q, connector)
    local errors = require "wolkvox.errors"
    local cfg, why = M.parse(o.redis)
    if not cfg then
        errors.throw("params", { message = why })
    end
    cfg.cafile, cfg.cert, cfg.key = o.redis_cafile, o.redis_cert, o.redis_key
    local connect
    connect, why = (connector or M.connector)(cfg)
    if not connect then
        errors.throw("params", { message = why })
    end
    local b = M.new { cfg = cfg, connect = connect, prefix = o.redis_prefix,
        timeout = math.min(o.connect_timeout or 5, 5) }
    local limit = o.server_limit or 60
    p.shared, p.shared_key = b, "{" .. token_id .. "}"
    p.lease = max(o.timeout or 60, limit) + M.LEASE_MARGIN
    q.shared, q.shared_key = b, "{" .. operation_id .. "}"
    return p, q
end

return M
