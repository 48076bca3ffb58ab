--- lua-wolkvox: the wolkvox contact-center API as native Lua tables.
--
--     local wolkvox = require "wolkvox"
--     local c = assert(wolkvox.new { server = "0031" })   -- token from WOLKVOX_TOKEN
--     local rows, meta = c:routing_points()
--
-- @module wolkvox

local client = require "wolkvox.client"
local errors = require "wolkvox.errors"
local registry = require "wolkvox.api.registry"

local M = {
    _VERSION = "wolkvox " .. require("wolkvox.version"),
}

--- Create a client; see `wolkvox.client`.
M.new = client.new

--- Error helpers: `errors.is(v)`, `errors.kinds`.
M.errors = errors

--- The endpoint registry.
M.registry = registry

return M
