--- The OpenResty transport: HTTP/1.1 over nginx cosockets, so a call never
-- blocks the worker (a libcurl call would freeze every request of it).
-- Chosen by `wolkvox.new` inside nginx.  It gives the results the C session
-- gives (see `wolkvox.transport.curl`): keep-alive pool per server, TLS with
-- verification (`lua_ssl_trusted_certificate`), gzip, chunked bodies, the
-- size cap, timeouts, the same error reasons.  Calls in flight run as light
-- threads (`ngx.thread`) of the request that makes them.
-- See `wolkvox.transport` for the contract.
-- @module wolkvox.transport.ngx

local defaults = require "wolkvox.defaults"
local errors = require "wolkvox.errors"
local transport = require "wolkvox.transport"
local http = require "wolkvox.transport.ngx_http"


local pcall, type, tostring, pairs, setmetatable, unpack, concat =
    pcall, type, tostring, pairs, setmetatable, unpack or table.unpack, table.concat

local M = {}

--- Phases where cosockets work (lua-nginx-module's list).
M.PHASES = { rewrite = true, access = true, content = true, timer = true, ssl_cert = true,
    ssl_session_fetch = true, ssl_client_hello = true }


M.USER_AGENT = "lua-wolkvox/" .. require("wolkvox.version") .. " ngx_lua"

--- True when running inside nginx with the Lua module.
function M.available()
    return type(ngx) == "table" and type(ngx.get_phase) == "function" and ngx.socket ~= nil
end

local mask = transport.mask
M.mask = mask

-- JSON: the C decoder when its 5.1-ABI build is installed, else lua-cjson
-- (then null members are dropped, as the C decoder does).  decode(text,
-- secret) masks `secret` in every decoded string, keys and values alike:
-- the C decoder does it itself, the lua-cjson one by walking the result.
local decode, core_decoder, core_stat
do
    local ok, core = pcall(require, "wolkvox.core")
    if ok then
        decode = core.decode
        core_decoder = core.decoder
        core_stat = core.stat
        M.decoder = "wolkvox.core"
        -- Answers of rows can wait on disk (a request's `spool`), as with curl,
        -- and rows a sink takes as lines be made into them as they arrive
        -- (a request's `csv`: see wolkvox.transport.curl).
        M.spool = true
        M.spool_lines = true
    else
        M.decoder = "cjson"
        local cjson = require("cjson.safe").new()
        local null = cjson.null
        decode = function(s, secret)
            local v, err = cjson.decode(s)
            if v == nil then
                return nil, err
            end
            return transport.mask_value(v, secret, null)
        end
    end
end

--- The clock: `now` and `time` (seconds, refreshed), `sleep` (yields).
M.clock = {
    now = function()
        ngx.update_time()
        return ngx.now()
    end,
    sleep = function(s)
        ngx.sleep(s)
    end,
}
M.clock.time = M.clock.now

local Transport = {}
Transport.__index = Transport

-- A whole request: an exchange, and one more on a new connection when a
-- kept-alive one turned out dead before any answer (as libcurl does).
function Transport:perform(req, head_of)
    local t0 = M.clock.now()
    local res = { status = 0, bytes = 0, wire_bytes = 0, connects = 0, sends = 0 }
    local _, again = http.exchange(self, req, head_of, res, t0)
    if again then
        res.error = nil
        http.exchange(self, req, head_of, res, t0)
    end
    res.time = M.clock.now() - t0
    self.requests = self.requests + 1
    return res
end

-- ---- batches: the calls of one operation ----------------------------------------
--
-- A batch learns which light thread ended through a semaphore
-- (lua-resty-core's ngx.semaphore), not through ngx.thread.wait on all of
-- them: that marks every thread of the list as waited for, and one that
-- ends later, while the request's own thread waits on a cosocket (fleet
-- mode's Redis commands between two waits), would resume it with that
-- thread's results in place of the cosocket's.  (Without lua-resty-core,
-- ngx.thread.wait on all of them, as before.)

--- Seconds a batch waits on its semaphore at a time.
M.WAIT_SLICE = 60

-- A new semaphore, or nil without lua-resty-core (looked up once, inside nginx).
local semaphore
local function new_semaphore()
    if semaphore == nil then
        local ok, mod = pcall(require, "ngx.semaphore")
        semaphore = ok and mod or false
    end
    return semaphore and semaphore.new() or nil
end

local Batch = {}
Batch.__index = Batch

--- Start `req` as a light thread of the current request.
function Batch:start(req)
    local t = self.transport
    if t.closed_flag then
        errors.throw("closed", { message = "the client is closed" })
    end
    http.check_request(req)
    self.seq = self.seq + 1
    local id = self.seq
    local th, err = ngx.thread.spawn(function()
        self.live[id] = true
        t:flight(1)
        local ok, res = pcall(t.perform, t, req, t.head_of)
        self.live[id] = nil
        t:flight(-1)
        if not ok then
            res = { status = 0, bytes = 0, connects = 0, sends = 1,
                error = { kind = "transport", reason = "other", message = tostring(res), sent = true } }
        end
        if self.sema then
            local done = self.done
            done[#done + 1] = id
            self.sema:post(1)
        end
        return id, res
    end)
    if not th then
        error("cannot start a light thread: " .. tostring(err), 0)
    end
    self.threads[id] = th
    self.n = self.n + 1
    return id
end

--- Wait for one started request; its id and result (nil when none).
function Batch:wait()
    if self.n == 0 then
        return nil
    end
    local ok, id, res
    if self.sema then
        -- The next thread that ended, told by the semaphore; waiting on
        -- it then returns at once (it is a zombie by now).
        while not self.done[1] do
            local got, err = self.sema:wait(M.WAIT_SLICE)
            if not got and err ~= "timeout" then
                error("a light thread could not be waited for: " .. tostring(err), 0)
            end
        end
        ok, id, res = ngx.thread.wait(self.threads[table.remove(self.done, 1)])
    else
        local list = {}
        for _, th in pairs(self.threads) do
            list[#list + 1] = th
        end
        ok, id, res = ngx.thread.wait(unpack(list))
    end
    if not ok then
        error("a light thread failed: " .. tostring(id), 0)
    end
    self.threads[id] = nil
    self.n = self.n - 1
    return id, res
end

--- Abort what is in flight; returns the count and the sends it may have cost.
function Batch:cancel()
    local n = 0
    for id, th in pairs(self.threads) do
        ngx.thread.kill(th)
        self.threads[id] = nil
        if self.live[id] then
            self.live[id] = nil
            self.transport:flight(-1)
        end
        n = n + 1
    end
    self.n, self.done = 0, {}
    return n, n
end

function Batch:inflight()
    return self.n
end

-- ---- the transport -------------------------------------------------------------

--- A batch for one operation (calls in flight belong to the request that
-- runs them, so two requests of a worker never mix their answers).
function Transport:batch()
    return setmetatable({ transport = self, threads = {}, n = 0, seq = 0, done = {}, live = {},
        sema = new_semaphore() }, Batch)
end

function Transport:stats()
    return { requests = self.requests, connects = self.connects, bytes = self.bytes, inflight = self.inflight }
end

-- ---- metrics in the shared dict ------------------------------------------------
--
-- Counters every worker adds to, for one scrape to read (`wolkvox.out.metrics`'s
-- `serve_ngx`): `wolkvox:m:NAME` or `wolkvox:m:NAME|ENDPOINT|OUTCOME` (`%` and
-- `|` escaped), each listed once in an index (`wolkvox:m:#` counts them,
-- `wolkvox:m:#N` names the Nth) when its first count creates it, so a scrape
-- never walks the dict's keys.  Calls in flight are one key per worker
-- (`wolkvox:m:inflight:ID`), set to 0 by a new process of that worker id on
-- its first call (a worker that died mid-call leaves a stale count until then).
-- The operation whose ledger a scrape reads is the one the latest client was
-- made for (`wolkvox:m:ledger`).

local METRIC, INDEX, INFLIGHT, LEDGER = "wolkvox:m:", "wolkvox:m:#", "wolkvox:m:inflight:", "wolkvox:m:ledger"

local function enc(s)
    return (tostring(s):gsub("[%%|]", function(c) return string.format("%%%02X", c:byte()) end))
end

local function dec(s)
    return (s:gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end))
end

-- The process that last reset each dict's in-flight key of this worker.
local reset_by = {}

-- This worker's in-flight key of `dict` (named `name`), reset by a new
-- process; nil outside a worker (init_by_lua).
local function inflight_key(dict, name)
    local id = ngx.worker.id()
    if not id then
        return nil
    end
    local key = INFLIGHT .. id
    local pid = ngx.worker.pid()
    if reset_by[name] ~= pid then
        reset_by[name] = pid
        dict:set(key, 0)
    end
    return key
end

--- A call of this transport started (`d` = 1) or ended (-1): counted here
-- (`stats().inflight`) and in the shared dict for every worker.
function Transport:flight(d)
    self.inflight = self.inflight + d
    local dict = self.mdict
    if dict then
        pcall(function()
            local key = inflight_key(dict, self.mdict_name)
            if key then
                dict:incr(key, d, 0)
            end
        end)
    end
end

--- The counters of `wolkvox.runtime` in the `lua_shared_dict` named by
-- `shared_dict` (default "wolkvox"), shared by every worker; nil without
-- the dict.  The object has `add(name, n[, endpoint, outcome])`.  It also
-- records which operation's ledger a scrape reads (`metrics_snapshot`).
function M.metrics(o)
    local dict = ngx.shared[o.shared_dict or defaults.UNSET.shared_dict]
    if not dict then
        return nil
    end
    local desc = table.concat({ transport.fingerprint(o.base_url):sub(1, 16), tostring(o.utc_offset or 0),
        tostring(o.daily_limit or "-"), o.prefer_measured and "1" or "0", tostring(o.reserve or 0),
        o.redis and "fleet" or "local" }, " ")
    if dict:get(LEDGER) ~= desc then
        dict:set(LEDGER, desc)
    end
    return {
        add = function(_, name, n, endpoint, outcome)
            local key = METRIC .. name
            if endpoint then
                key = key .. "|" .. enc(endpoint) .. "|" .. enc(outcome)
            end
            local v = dict:incr(key, n, 0)
            if v == n then
                -- Created by this count: listed once (a second worker's
                -- first count finds it made and gets more than n).
                local i = dict:incr(INDEX, 1, 0)
                if i then
                    dict:set(INDEX .. i, key)
                end
            end
        end,
    }
end

--- What the shared dict holds, as `wolkvox.out.metrics` renders it:
-- `{ stats = { by_endpoint, retries, throttled, bytes, rows, in_flight },
-- quota = the ledger's status }`.
-- @tparam[opt] table opts `dict` (the `lua_shared_dict`'s name, default
--   "wolkvox"); `client` (a client whose `c:quota { measure = false }` gives
--   the quota instead: needed in fleet mode, where the day's count is in Redis)
-- @return the snapshot, or nil and why
function M.metrics_snapshot(opts)
    opts = opts or {}
    local name = opts.dict or defaults.UNSET.shared_dict
    local dict = ngx.shared[name]
    if not dict then
        return nil, "no lua_shared_dict " .. name .. " (declare it in the http block: lua_shared_dict " .. name
            .. " 1m;)"
    end
    local stats = { by_endpoint = {}, retries = 0, throttled = 0, bytes = 0, rows = 0, in_flight = 0 }
    for i = 1, dict:get(INDEX) or 0 do
        local key = dict:get(INDEX .. i)
        local v = key and dict:get(key)
        if v then
            local metric, endpoint, outcome = key:sub(#METRIC + 1):match("^([^|]*)|([^|]*)|([^|]*)$")
            if metric == "calls" then
                endpoint, outcome = dec(endpoint), dec(outcome)
                local per = stats.by_endpoint[endpoint] or {}
                stats.by_endpoint[endpoint] = per
                per[outcome] = (per[outcome] or 0) + v
            elseif not metric and stats[key:sub(#METRIC + 1)] then
                stats[key:sub(#METRIC + 1)] = v
            end
        end
    end
    for id = 0, ngx.worker.count() - 1 do
        local n = dict:get(INFLIGHT .. id)
        if n and n > 0 then
            stats.in_flight = stats.in_flight + n
        end
    end
    local q
    if opts.client then
        q = opts.client:quota { measure = false }
    else
        local desc = dict:get(LEDGER)
        local op, offset, limit, prefer, reserve, mode = (desc or ""):match("^(%S+) (%S+) (%S+) (%S+) (%S+) (%S+)$")
        -- (In fleet mode the day's count is in Redis: said only through a client.)
        if op and mode == "local" then
            q = require("wolkvox.limits.quota").new({ dict = dict, key = op, utc_offset = tonumber(offset),
                daily_limit = tonumber(limit), prefer_measured = prefer == "1", reserve = tonumber(reserve),
                time = M.clock.time }):status()
        end
    end
    return { stats = stats, quota = q }
end

--- Answer the current request with the metrics of the shared dict, made
-- into text by `render(snapshot)` (`wolkvox.out.metrics`'s `serve_ngx`).
function M.serve_metrics(render, opts)
    local snap, err = M.metrics_snapshot(opts)
    if not snap then
        ngx.status = 500 -- luacheck: ignore 122 (the response's own fields)
        ngx.header["Content-Type"] = "text/plain; charset=utf-8" -- luacheck: ignore 122
        ngx.say("wolkvox metrics: ", err)
        return
    end
    ngx.header["Content-Type"] = "text/plain; version=0.0.4; charset=utf-8" -- luacheck: ignore 122
    ngx.print(render(snap))
end

function Transport:capacity()
    return self.closed_flag and 0 or 2
end

function Transport:close()
    self.closed_flag = true
end

function Transport:closed()
    return self.closed_flag == true
end

function Transport:token_id()
    return self.id
end

--- Why a call cannot be made here and now, or nil: cosockets exist only in
-- some phases of nginx.
function Transport:unusable() -- luacheck: ignore 212 (a method like the others)
    local phase = ngx.get_phase()
    if not M.PHASES[phase] then
        return "calls need nginx cosockets, which the " .. phase .. " phase does not have; "
            .. "make the call from a rewrite, access or content handler, or from a timer: "
            .. "ngx.timer.at(0, function() ... end)"
    end
end

Transport.__tostring = function(self)
    return "wolkvox.transport.ngx (" .. (self.closed_flag and "closed" or "open") .. ")"
end

--- How many pooled Redis connections a worker keeps.
M.REDIS_POOL = 32
--- How long an idle pooled Redis connection is kept (ms).
M.REDIS_IDLE = 30000
--- The most a Redis reply may hold: bytes of strings and array elements
-- (fleet mode's largest reply is a 40-byte script id), as `wolkvox.redis`.
M.REDIS_MAX_BYTES = 1024 * 1024
M.REDIS_MAX_ELEMENTS = 4096

-- A command in the Redis protocol: an array of bulk strings.
local function resp(args)
    local out = { "*" .. #args .. "\r\n" }
    for i = 1, #args do
        local a = tostring(args[i])
        out[#out + 1] = "$" .. #a .. "\r\n" .. a .. "\r\n"
    end
    return concat(out)
end

local NIL = {} -- a nil bulk string or array

-- Read one reply from `sock` by `deadline` (ngx.now() seconds), however
-- slowly its bytes come: each read waits only for what is left, and takes
-- what has arrived.  Returns the value (an error reply is `false, message`),
-- or nil, kind ("timeout", "protocol", "io") and why.  Leftover bytes after
-- the reply are a protocol error: the connection would answer the next
-- command with this one's extra reply.
local function read_reply(sock, deadline)
    local buf, used = "", 0
    local function fill()
        local left = deadline - ngx.now()
        if left <= 0 then
            return nil, "timeout", "no whole reply from Redis by its deadline"
        end
        sock:settimeout(math.max(1, math.floor(left * 1000)))
        local data, err = sock:receiveany(65536)
        if not data then
            return nil, err == "timeout" and "timeout" or "io", "Redis: " .. tostring(err)
        end
        buf = buf .. data
        return true
    end
    local function line()
        while true do
            local at = buf:find("\r\n", 1, true)
            if at then
                local l = buf:sub(1, at - 1)
                buf = buf:sub(at + 2)
                return l
            end
            if #buf > 65536 then
                return nil, "protocol", "a Redis reply line longer than 64 KiB"
            end
            local ok, kind, why = fill()
            if not ok then
                return nil, kind, why
            end
        end
    end
    local function protocol(why)
        return nil, "protocol", "not a Redis reply: " .. why
    end
    local function reply(depth)
        local l, kind, why = line()
        if not l then
            return nil, kind, why
        end
        local t, rest = l:sub(1, 1), l:sub(2)
        if t == "+" then
            return rest
        elseif t == "-" then
            return false, rest
        elseif t == ":" then
            local n = tonumber(rest)
            return n or protocol("an integer reply of '" .. rest:sub(1, 40) .. "'")
        elseif t == "$" or t == "*" then
            local n = tonumber(rest)
            if n == -1 then
                return NIL
            elseif not n or n < 0 or n ~= math.floor(n) then
                return protocol("a length of '" .. rest:sub(1, 40) .. "'")
            end
            if t == "*" then
                if n > M.REDIS_MAX_ELEMENTS or depth > 8 then
                    return protocol("too large (over " .. M.REDIS_MAX_ELEMENTS .. " elements)")
                end
                local list = {}
                for i = 1, n do
                    local v, k, w = reply(depth + 1)
                    if v == nil then
                        return nil, k, w
                    elseif v == false then
                        return protocol("an error inside an array")
                    end
                    list[i] = v
                end
                return list
            end
            used = used + n
            if used > M.REDIS_MAX_BYTES then
                return protocol("too large (over " .. M.REDIS_MAX_BYTES .. " bytes)")
            end
            while #buf < n + 2 do
                local ok, k, w = fill()
                if not ok then
                    return nil, k, w
                end
            end
            if buf:sub(n + 1, n + 2) ~= "\r\n" then
                return protocol("a bulk string not ended by CRLF")
            end
            local v = buf:sub(1, n)
            buf = buf:sub(n + 3)
            return v
        end
        return protocol("'" .. l:sub(1, 40) .. "'")
    end
    local v, kind, why = reply(0)
    if v ~= nil and buf ~= "" then
        return nil, "protocol", "Redis sent more than one reply"
    end
    return v, kind, why
end

-- A reply as `wolkvox.limits.redis` takes it: a nil bulk is false.
local function plain(v)
    if v == NIL then
        return false
    elseif type(v) == "table" then
        local out = {}
        for i = 1, #v do
            out[i] = plain(v[i])
        end
        return out
    end
    return v
end

-- A client certificate chain and its private key for rediss:// (PEM files),
-- parsed by ngx.ssl (lua-resty-core) once per worker and pair of paths, as
-- nginx reads its own certificates once (rotated files: reload nginx).
-- Gives them, or nil, nil and why (naming the file, never its content).
local client_certificates = {}
local function client_certificate(cert_path, key_path)
    local id = cert_path .. "\0" .. key_path
    local got = client_certificates[id]
    if got then
        return got.cert, got.key
    end
    local okssl, ssl = pcall(require, "ngx.ssl")
    if not okssl or not ssl.parse_pem_cert or not ssl.parse_pem_priv_key then
        return nil, nil, "redis_cert and redis_key need ngx.ssl's parse_pem_cert and parse_pem_priv_key "
            .. "(lua-resty-core, as Debian 12's 0.1.25 has)"
    end
    local parsed = {}
    for _, f in ipairs { { "cert", cert_path, ssl.parse_pem_cert, "redis_cert" },
            { "key", key_path, ssl.parse_pem_priv_key, "redis_key" } } do
        -- (a FIFO or a device would hold the worker in open() or read())
        local st = core_stat and core_stat(f[2], true)
        if st and st.type ~= "file" then
            return nil, nil, f[4] .. ": " .. f[2] .. " is not a regular file"
        end
        local h, oerr = io.open(f[2], "rb")
        if not h then
            return nil, nil, f[4] .. ": cannot read " .. tostring(oerr)   -- (io.open's message names the file)
        end
        local pem = h:read(64 * 1024 + 1) or ""
        h:close()
        -- (parsing one would have OpenSSL ask for its passphrase on a terminal)
        if f[1] == "key" and pem:find("ENCRYPTED", 1, true) then
            return nil, nil, "redis_key: " .. f[2] .. " holds a key with a passphrase, which is not read: give one "
                .. "without"
        end
        local v = #pem <= 64 * 1024 and pem:find("-----BEGIN ", 1, true) and f[3](pem)
        if not v then
            return nil, nil, f[4] .. ": " .. f[2] .. " holds no PEM " .. (f[1] == "cert" and "certificate"
                or "private key") .. " that nginx can read"
        end
        parsed[f[1]] = v
    end
    client_certificates[id] = parsed
    return parsed.cert, parsed.key
end

--- The Redis connector inside nginx (`wolkvox.limits.redis`): the Redis
-- protocol on cosockets.  A client is shared by the requests of a worker and
-- a cosocket belongs to one request, so each command takes a connection from
-- the worker's pool (authenticated once, when new) and gives it back.  Each
-- command, its connection and AUTH/SELECT included, has `timeout` seconds in
-- all however slowly the server answers, and its reply at most
-- `REDIS_MAX_BYTES` of strings and `REDIS_MAX_ELEMENTS` elements; a
-- connection that timed out or sent what is not one whole reply is closed,
-- never pooled.  `rediss://` does the TLS handshake (verified against
-- `lua_ssl_trusted_certificate`) on new connections, showing `redis_cert`
-- (`redis_key`) to a server that asks for a client's certificate; those
-- connections have a pool of their own.  `redis_cafile` is refused here:
-- inside nginx the trust is `lua_ssl_trusted_certificate`, and an option
-- that would be silently ignored is an error.
-- @return the connector's function, or nil and why
function M.redis_connector(url)
    if url and url.cafile then
        return nil, "redis_cafile is for wolkvox.redis outside nginx; inside nginx the Redis server is "
            .. "verified against lua_ssl_trusted_certificate"
    end
    local cert, key, pool
    if url and url.cert then
        local why
        cert, key, why = client_certificate(url.cert, url.key)
        if not cert then
            return nil, why
        end
        pool = url.pool .. "#" .. transport.fingerprint("wolkvox-redis-cert:" .. url.cert .. "\0" .. url.key):sub(1, 16)
    end
    local state_redis = require "wolkvox.limits.redis"
    return function(cfg, timeout)
        local conn = {}
        function conn.command(_, ...)
            local deadline = ngx.now() + timeout
            local sock = ngx.socket.tcp()
            sock:settimeout(math.max(1, math.floor(timeout * 1000)))
            local done, err = sock:connect(cfg.host, cfg.port, { pool = pool or cfg.pool })
            if not done then
                return nil, "cannot connect to Redis: " .. tostring(err), "io"
            end
            -- One command on this connection: its value, or nil, why, kind.
            local function call(args)
                local left = deadline - ngx.now()
                if left <= 0 then
                    return nil, "no whole reply from Redis by its deadline", "timeout"
                end
                sock:settimeout(math.max(1, math.floor(left * 1000)))
                local sent, serr = sock:send(resp(args))
                if not sent then
                    return nil, "Redis: " .. tostring(serr), serr == "timeout" and "timeout" or "io"
                end
                local v, kind, why = read_reply(sock, deadline)
                if v == nil then
                    return nil, why, kind
                elseif v == false then
                    return nil, kind, "reply" -- (kind holds the error reply's text)
                end
                return plain(v)
            end
            if sock:getreusedtimes() == 0 then
                if cfg.tls then
                    -- (Debian's lua-resty-core asserts, instead of returning
                    -- the error, when verification fails after the handshake
                    -- had to wait: a raise here is a failed handshake too.)
                    local called
                    if cert then
                        if not sock.setclientcert then
                            sock:close()
                            return nil, "redis_cert needs cosockets' setclientcert (lua-resty-core, as Debian "
                                .. "12's 0.1.25 has)", "io"
                        end
                        sock:setclientcert(cert, key)
                    end
                    called, done, err = pcall(sock.sslhandshake, sock, nil, cfg.host, true)
                    if not called then
                        done, err = nil, "handshake failed (" .. tostring(done) .. ")"
                    end
                    if not done then
                        sock:close()
                        return nil, "TLS: " .. tostring(err), "io"
                    end
                end
                done, err = state_redis.handshake({ command = function(_, ...)
                    return call({ ... })
                end }, cfg)
                if not done then
                    sock:close()
                    return nil, err, "io"
                end
            end
            local r, why, kind = call({ ... })
            if r == nil and kind ~= "reply" then
                sock:close()
                return nil, why, kind
            end
            sock:setkeepalive(M.REDIS_IDLE, M.REDIS_POOL)
            if r == nil then
                return nil, why, kind
            end
            return r
        end
        function conn.close() end
        return conn
    end
end

--- Where the pacer and the ledger keep what the workers share: the
-- `lua_shared_dict` named by `shared_dict` (default "wolkvox"), or nothing
-- when it is not declared (this worker only); with the `redis` option,
-- also Redis on cosockets (every host that names it).
function M.state(o, t)
    local dict = ngx.shared[o.shared_dict or defaults.UNSET.shared_dict]
    local op = transport.fingerprint(o.base_url):sub(1, 16)
    local p, q = {}, {}
    if dict then
        p, q = { dict = dict, key = t:token_id(), ttl = o.timeout + 15 }, { dict = dict, key = op }
    end
    if o.redis then
        require("wolkvox.limits.redis").attach(o, t:token_id(), op, p, q, function(cfg)
            return M.redis_connector(cfg)
        end)
    end
    return p, q
end

local worker_cache
--- The cache of lookup answers (`cache` option): the `lua_shared_dict`
-- named by `cache.dict`, else by `shared_dict` (default "wolkvox"), shared
-- by the workers, its entries expiring with the dict's own TTL; values are
-- JSON (lua-cjson).  Without the dict (or lua-cjson), this worker's memory.
function M.cache(o)
    local dict = ngx.shared[o.cache and o.cache.dict or o.shared_dict or defaults.UNSET.shared_dict]
    local ok, cjson = pcall(require, "cjson.safe")
    if not (dict and ok) then
        worker_cache = worker_cache or transport.memory_cache(M.clock.now)
        return worker_cache
    end
    cjson = cjson.new()
    return {
        get = function(_, key)
            local text = dict:get(key)
            return text and cjson.decode(text) or nil
        end,
        set = function(_, key, value, ttl)
            local text = cjson.encode(value)
            if text then -- a value JSON cannot hold is not kept
                dict:set(key, text, ttl)
            end
        end,
    }
end

--- The current request's own store for `owner` (in `ngx.ctx`): the
-- requests of a worker share a client, and one must never abort another's
-- calls.
function M.store(owner)
    local t = ngx.ctx.wolkvox_running
    if not t then
        t = setmetatable({}, { __mode = "k" })
        ngx.ctx.wolkvox_running = t
    end
    local r = t[owner]
    if not r then
        r = {}
        t[owner] = r
    end
    return r
end

local NGX_LEVEL = { debug = "DEBUG", info = "INFO", warn = "WARN" }

--- nginx's error log (`logger = "ngx"`, the default inside nginx).
function M.log(level, line)
    ngx.log(ngx[NGX_LEVEL[level] or "NOTICE"], "wolkvox: ", line)
end

--- A transport for `opts` and `token`.  The token stays in closures: no
-- table field, log, hook or tostring reaches it, and it is masked out of
-- whatever the server sends back (an error page that echoes it, a decoded
-- string, a snippet of a body that is not JSON).
function M.new(opts, token)
    local line = "wolkvox-token: " .. token
    local id = transport.fingerprint("wolkvox-token:" .. token)
    return setmetatable({
        head_of = function() return line end,
        mask = function(s)
            return s and mask(s, token)
        end,
        decode = function(text)
            return decode(text, token)
        end,
        -- The C core's incremental decoder, when it is installed here: rows
        -- counted only (`count`), or made into a request's `csv` lines.
        decoder = core_decoder and function(count, csv)
            if csv then
                return core_decoder { secret = token, csv = csv.columns, ndjson = csv.ndjson, time = csv.time,
                    strict = true }
            end
            return core_decoder { secret = token, count = count }
        end or nil,
        -- An unnamed file in `dir` for an answer whose rows wait on disk.
        spool = core_decoder and function(dir)
            return require("wolkvox.core").spool(dir, token)
        end or nil,
        id = id,
        -- The checked options carry every default (`wolkvox.options`).
        timeout_ms = opts.timeout * 1000,
        connect_ms = opts.connect_timeout * 1000,
        max_bytes = opts.max_bytes,
        verify = opts.verify ~= false,
        user_agent = opts.user_agent or M.USER_AGENT,
        requests = 0, connects = 0, bytes = 0, fresh_seq = 0, inflight = 0,
        -- The shared dict where calls in flight are counted for every worker.
        mdict = ngx.shared[opts.shared_dict or defaults.UNSET.shared_dict],
        mdict_name = opts.shared_dict or defaults.UNSET.shared_dict,
        gc_hold = opts.gc_hold == nil and defaults.UNSET.gc_hold or opts.gc_hold,
    }, Transport)
end

return M
