--- Every default of the library, in one table at the bottom of the layers:
-- the options check (`wolkvox.options`) fills a client's options from it,
-- and a module used on its own (a pacer, a fleet backend, a transport in a
-- spec) falls back to the same values.  Change a default here only.
-- @module wolkvox.defaults

local M = {
    timeout = 60,           -- the server's own limit per call
    connect_timeout = 10,
    max_bytes = 256 * 1024 * 1024,
    max_concurrent = 2,     -- wolkvox allows 2 calls in flight per token
    max_rows = 60000,       -- the API's silent cap: an answer this long is split again
    -- The operation's clock, seconds east of UTC.  wolkvox does not document
    -- it; its docs are written from Bogota (UTC-5, no DST), so that is the
    -- guess.  It matters for os.time() numbers, relative dates ("yesterday")
    -- and the quota day.
    utc_offset = -5 * 3600,
    retries = 2,            -- 3 attempts in all for reads
    retry_base = 1,
    retry_cap = 30,
    min_interval = 0,
    reserve = 0,
}

--- Defaults the module that uses the option applies when it is not given
-- (the options are left without them, so a spec may lower a module's own).
M.UNSET = {
    server_limit = 60,       -- seconds an abandoned call may still hold a slot at wolkvox (the pacer)
    shared_dict = "wolkvox", -- inside nginx, the lua_shared_dict of the pacer and the ledger (ngx)
    gc_hold = true,          -- the collector waits while rows are decoded (nginx: transport.gc_hold; libcurl: C)
}

--- Defaults that apply only with another option, filled where that option
-- is checked: fleet mode's (`redis`).
M.FLEET = {
    redis_prefix = "wolkvox:", -- the namespace of the keys
    redis_failure = "refuse",  -- what a call does while Redis cannot be reached
}

--- The spool directory (`spool_dir`) when none is given: `$TMPDIR`, else
-- "/tmp" (a function: read from the environment when a client is made).
function M.spool_dir()
    local tmp = os.getenv("TMPDIR")
    return tmp and tmp ~= "" and tmp or "/tmp"
end

--- The directory of the quota ledger and pacing locks (`state_dir`) when
-- none is given: $XDG_CACHE_HOME/lua-wolkvox, or ~/.cache/lua-wolkvox; nil
-- without either (then none: `false`).
function M.state_dir()
    local xdg = os.getenv("XDG_CACHE_HOME")
    if xdg and xdg ~= "" then
        return xdg .. "/lua-wolkvox"
    end
    local home = os.getenv("HOME")
    if home and home ~= "" then
        return home .. "/.cache/lua-wolkvox"
    end
    return nil
end

--- Not an option's default: the most calls one plan may spend while the
-- day's quota limit is unknown (no `daily_limit`/`licenses`, no token_info
-- measured today); `max_calls` sets the ceiling instead.
M.MAX_CALLS_UNKNOWN_LIMIT = 1000

return M
