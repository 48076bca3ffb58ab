--- Which transport a client uses: the factory, apart from the contract
-- (`wolkvox.transport`) that every transport requires, so the layers point
-- one way (the runtime and the options choose; transports never do).
-- @module wolkvox.transport.select

local type, tostring, rawget, _G = type, tostring, rawget, _G

local M = {}

-- The transports by the names `wolkvox.new { transport = ... }` takes.
local LOAD = {
    curl = function() return require "wolkvox.transport.curl" end,
    ngx = function() return require "wolkvox.transport.ngx" end,
    fake = function() return require "wolkvox.transport.fake" end,
}

--- The module of transport `name`; without a name, the one this host
-- uses: "ngx" inside nginx, else "curl".
-- @return the module and its name, or nil and a message
function M.module(name)
    if name == nil then
        -- (Outside nginx there is no `ngx` global: the nginx transport is
        -- not even loaded.)
        if type(rawget(_G, "ngx")) == "table" then
            local ngx_mod = LOAD.ngx()
            if ngx_mod.available() then
                return ngx_mod, "ngx"
            end
        end
        return LOAD.curl(), "curl"
    end
    local load = LOAD[name]
    if not load then
        return nil, "unknown transport '" .. tostring(name) .. "' (curl, ngx or fake)"
    end
    return load(), name
end

--- A logger function for a logger option: a function as it is, "stderr",
-- or the name of a transport whose host has a log ("ngx").
function M.logger(v)
    if type(v) == "function" or v == nil then
        return v
    end
    if v == "stderr" then
        return function(level, line)
            io.stderr:write("wolkvox [", level, "] ", line, "\n")
        end
    end
    local load = LOAD[v]
    local mod = load and load()
    return mod and mod.log or nil
end

return M
