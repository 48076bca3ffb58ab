--- The opt-in cache of lookup answers (`wolkvox.new { cache = { ttl = 300 } }`):
-- a successful answer of a `lookup` endpoint (agents, skills, campaigns,
-- routing points, ...) is kept `ttl` seconds, and the same call within that
-- time is answered from it without a call (`meta.cached = true`,
-- `meta.calls = 0`).  Writes, reports, snapshots and failures are never
-- kept.  Where it is kept is the transport's `cache` store (see
-- `wolkvox.transport`): this process (curl), the in-process fake server, or
-- a `lua_shared_dict` shared by nginx's workers (ngx).  Keys are SHA-256
-- fingerprints of the token's fingerprint, the method, the URL and the
-- body: neither the token nor the parameters appear in them.
-- @module wolkvox.limits.cache

local transport = require "wolkvox.transport"

local type, pairs, tostring = type, pairs, tostring

local M = {}

--- Check the `cache` option: the table, or nil and what is wrong (to
-- follow "option 'cache' ").
function M.check(v)
    for k in pairs(v) do
        if k ~= "ttl" and k ~= "dict" then
            return nil, "has an unknown key '" .. tostring(k) .. "' (ttl, dict)"
        end
    end
    if type(v.ttl) ~= "number" or v.ttl ~= v.ttl or v.ttl <= 0 or v.ttl == math.huge then
        return nil, "needs ttl, a positive number of seconds"
    end
    if v.dict ~= nil and type(v.dict) ~= "string" then
        return nil, "has a dict that is not the name of a lua_shared_dict"
    end
    return v
end

-- The key of a job's request, or nil when its answer may not be kept.
local function key_of(ctx, job)
    local e = job.e
    if not ctx.cache or e.kind ~= "lookup" or job.mode ~= "single" or job.unchecked then
        return nil
    end
    local req = job.template
    return "cache:" .. transport.fingerprint("wolkvox-cache\0" .. ctx.transport:token_id() .. "\0"
        .. req.method .. " " .. req.url .. "\0" .. (req.body or ""))
end

--- Run `job` with `run(ctx, job)`, through the cache when the client has one
-- and the endpoint is a lookup: a kept answer comes back without a call;
-- a fresh successful one is kept.
function M.run(ctx, job, run)
    local key = key_of(ctx, job)
    if key then
        local hit = ctx.cache:get(key)
        if type(hit) == "table" and hit.meta then
            local meta = hit.meta
            meta.cached, meta.age = true, ctx.clock.time() - (hit.at or 0)
            meta.calls, meta.attempts, meta.retries, meta.waited, meta.connects = 0, 0, 0, 0, 0
            ctx.cache_hits = (ctx.cache_hits or 0) + 1
            return hit.data, meta
        end
    end
    local data, meta = run(ctx, job)
    if key and type(meta) == "table" and type(meta.status) == "number" and meta.status >= 200
        and meta.status < 300 and not meta.empty then
        ctx.cache:set(key, { data = data, meta = meta, at = ctx.clock.time() }, ctx.cache_ttl)
    end
    return data, meta
end

return M
