--- The transport contract: what moves the bytes of a call, written once.
--
-- A transport module (`wolkvox.transport.curl`, `wolkvox.transport.ngx`)
-- returns a table with:
--
-- * `new(opts, token)` -> a transport object (below); `opts` are the
--   checked options of `wolkvox.new` (`timeout`, `connect_timeout`,
--   `max_bytes`, `max_concurrent`, `user_agent`, `cainfo`, `capath`,
--   `proxy`, `verify`).  The token goes into the request header and nowhere
--   else: no field, string or log line of the transport holds it, and it is
--   masked out of whatever the server sends back.
-- * `clock` -> `now()` (monotonic seconds), `time()` (epoch seconds, with
--   fractions), `sleep(seconds)` (blocks the thread, or yields inside nginx).
-- * `state(opts, transport)` -> the options of the pacer and of the quota
--   ledger: where the token's slots and the day's count are shared (files
--   under `state_dir`, an nginx shared dict, or nothing: this process only),
--   and with the `redis` option the fleet backend beside them
--   (`wolkvox.limits.redis.attach`, given a connector that fits the host).
-- * `cache(opts, transport)` (optional) -> where `cache = { ttl = ... }`
--   keeps lookup answers (`wolkvox.limits.cache`): an object with `get(key)` ->
--   the value or nil, and `set(key, value, ttl)`; values are plain tables
--   (data and meta of an answer), and what `get` returns is the caller's to
--   change.  Keys are fingerprints, never the token.
-- * `store(owner)` -> a table private to the current unit of work for
--   `owner` (the client itself; inside nginx, the current request's), where
--   the running call is remembered.
-- * `log(level, line)` (optional) -> the host's own log (the logger named
--   after the transport, `logger = "ngx"`).
-- * `metrics(opts, transport)` (optional) -> where `wolkvox.runtime`'s
--   counters are shared beyond the process (inside nginx: the shared dict,
--   every worker's): an object with `add(name, n[, endpoint, outcome])`;
--   nil to keep them in the process.
-- * `available()` (optional) -> true when this host can use it.
--
-- A transport object has:
--
-- * `start(req)` -> an id.  `req` is `{ method, url, body, content_type,
--   parts = { { name, data | path, filename, content_type } }, headers,
--   timeout, fresh, decode }`.  A request the transport cannot send raises
--   (a programming error); a closed transport throws the `closed` error.
-- * `wait()` -> `id, result` of the next request that ended (nil when none
--   is in flight).  An interrupt (a hook, Ctrl-C) may raise out of it.
-- * `cancel()` -> `n, sends`: requests aborted and how often they had gone
--   out (each may have cost a call of the quota).
-- * `stats()` -> `{ requests, connects, bytes, inflight }`.
-- * `token_id()` -> `M.fingerprint("wolkvox-token:" .. token)`.
-- * `close()`, `closed()`.
-- * `batch()` (optional) -> an object with `start`, `wait`, `cancel` for the
--   calls of one operation (inside nginx: light threads of one request).
-- * `unusable()` (optional) -> why no call can be made here and now, or nil.
--
-- A result is `{ status, value | body, bytes, wire_bytes, time, connects,
-- sends, content_type, retry_after, decode_error, snippet, error = { kind,
-- reason, message, curl_code, sent } }`; `error.reason` is one of
-- `M.REASONS`.
-- @module wolkvox.transport

local require, pcall, rep, concat = require, pcall, string.rep, table.concat

local M = {}

--- Why a transfer failed (`result.error.reason`), and whether another
-- attempt may pass (`true`) or never will (`false`).
M.REASONS = require("wolkvox.errors").reasons

--- `s` with every occurrence of `secret` replaced by as many '*' (a plain
-- find, not a pattern): how a transport without the C core keeps the token
-- out of what the server sends back.
function M.mask(s, secret)
    if secret == nil or secret == "" or not s:find(secret, 1, true) then
        return s
    end
    local out, i, stars = {}, 1, rep("*", #secret)
    while true do
        local a, b = s:find(secret, i, true)
        if not a then
            break
        end
        out[#out + 1] = s:sub(i, a - 1)
        out[#out + 1] = stars
        i = b + 1
    end
    out[#out + 1] = s:sub(i)
    return concat(out)
end

--- The error of an answer larger than `max_bytes` (kind too_large).
function M.too_large(max_bytes)
    return { kind = "too_large", reason = "size", sent = true,
        message = ("answer larger than the %d-byte limit"):format(max_bytes) }
end

--- The first 200 bytes of an answer that is not JSON, printable ASCII only,
-- for an error message (mask the token in the whole text first).
function M.snippet(s)
    return (s:sub(1, 200):gsub("[^\32-\126]", " "))
end

--- A decoded value with `secret` masked in every string, keys and values
-- alike (a copy; the C decoder does the same as it decodes).  Members of
-- objects equal to `null` (a decoder's null marker) are left out, as the C
-- decoder leaves out JSON nulls.
function M.mask_value(v, secret, null)
    if type(v) == "string" then
        return M.mask(v, secret)
    elseif type(v) ~= "table" then
        return v
    end
    local out = {}
    for k, x in pairs(v) do
        if type(k) == "string" then
            if null == nil or x ~= null then
                out[M.mask(k, secret)] = M.mask_value(x, secret, null)
            end
        else
            out[k] = M.mask_value(x, secret, null)
        end
    end
    return out
end

local function copy(v)
    if type(v) ~= "table" then
        return v
    end
    local out = {}
    for k, x in pairs(v) do
        out[k] = copy(x)
    end
    return out
end

--- A cache store in this process's memory for the `cache` of a transport:
-- at most `max` entries (default 1000; the oldest go first), each kept
-- `ttl` seconds of `now()`.  Values are copied in and out.
function M.memory_cache(now, max)
    max = max or 1000
    local entries, order, first = {}, {}, 1
    local store = {}
    function store.get(_, key)
        local item = entries[key]
        if item == nil then
            return nil
        end
        if now() >= item.expires then
            entries[key] = nil
            return nil
        end
        return copy(item.value)
    end
    function store.set(_, key, value, ttl)
        local slot = #order + 1
        order[slot] = key
        entries[key] = { value = copy(value), expires = now() + ttl, slot = slot }
        -- Forget the oldest keys past `max`; a key set again since holds a
        -- later slot and stays.
        while #order - first + 1 > max do
            local k = order[first]
            local item = entries[k]
            if item and item.slot == first then
                entries[k] = nil
            end
            order[first], first = nil, first + 1
        end
    end
    return store
end

local sha256
--- 32 hex digits of SHA-256 of `s`: the names of the state files, dict keys
-- and (later) shared keys, the same whichever transport computes them.
function M.fingerprint(s)
    if not sha256 then
        local ok, core = pcall(require, "wolkvox.core")
        sha256 = ok and core.sha256 or require("wolkvox.sha256")
    end
    return sha256(s):sub(1, 32)
end

return M
