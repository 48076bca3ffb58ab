-- examples/openresty/wallboard.lua: an OpenResty handler that serves a
-- wallboard's numbers as JSON, asking wolkvox at most every 5 minutes (the
-- vendor's polling guidance) however many browsers refresh it.
--
-- nginx.conf (see examples/openresty/nginx.conf):
--     lua_shared_dict wolkvox 1m;          # the token's slots and the day's count
--     lua_shared_dict wallboard 1m;        # the last answer, shared by the workers
--     location = /wallboard { content_by_lua_block { require("wallboard").handle() } }
--
-- WOLKVOX_SERVER / WOLKVOX_TOKEN come from the environment (`env` lines in
-- nginx.conf); WALLBOARD_TTL overrides the 300 s between calls.
local wolkvox = require "wolkvox"
local cjson = require "cjson.safe"

local M = {}

local TTL = tonumber(os.getenv("WALLBOARD_TTL") or "") or 300

-- One client per worker: it keeps its connections between requests.
local client

local function fetch(opts)
    if not client then
        local c, err = wolkvox.new { server = opts.server or os.getenv("WOLKVOX_SERVER"),
            token = opts.token or os.getenv("WOLKVOX_TOKEN"), base_url = opts.base_url }
        if not c then
            return nil, err
        end
        client = c
    end
    local rows, err = client:routing_points()
    if not rows then
        return nil, err
    end
    local out = { at = ngx.time(), routing_points = #rows, active = 0 }
    for _, rp in ipairs(rows) do
        if rp.ivr_active == "1" or rp.ivr_active == "yes" then
            out.active = out.active + 1
        end
    end
    return out
end

--- The content handler: the cached numbers, refreshed when older than TTL.
-- `opts` (optional) may give `server`, `base_url`, `token` instead of the
-- environment.
function M.handle(opts)
    opts = opts or {}
    local cache = ngx.shared.wallboard
    local body = cache and cache:get("numbers")
    if not body then
        -- One worker refreshes; the others wait briefly for its answer.
        local locked = not cache or cache:add("refreshing", true, 30)
        if locked then
            local numbers, err = fetch(opts)
            if cache then
                cache:delete("refreshing")
            end
            if not numbers then
                ngx.status = 502
                ngx.say(cjson.encode { error = tostring(err) })
                return
            end
            body = cjson.encode(numbers)
            if cache then
                cache:set("numbers", body, TTL)
            end
        else
            for _ = 1, 50 do
                ngx.sleep(0.1)
                body = cache:get("numbers")
                if body then
                    break
                end
            end
            if not body then
                ngx.status = 503
                ngx.say(cjson.encode { error = "the numbers are being refreshed; try again" })
                return
            end
        end
    end
    ngx.header.content_type = "application/json"
    ngx.say(body)
end

return M
