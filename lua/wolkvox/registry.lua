--- Look-ups over the endpoint registry (`wolkvox.endpoints`).
-- Also decides which endpoint a bare method name such as `c:agents()` means
-- when several families share an api name: the family that comes first in
-- `PRECEDENCE` takes the bare name; every endpoint stays reachable through
-- its family, `c.real_time:agents()`, and through `c:call(family, api)`.
-- @module wolkvox.registry

local data = require "wolkvox.endpoints"

local M = {}

--- Families in the order in which they claim a shared bare method name:
-- reports and reads first, live snapshots and agent commands last.
M.PRECEDENCE = {
    "information", "billing", "reports_manager", "customer", "campaign", "configuration",
    "whatsapp", "wolkvox_storage", "speech_analytics", "gamification", "quality", "sms",
    "real_time", "agentbox",
}

M.families = data.families
M.endpoints = data.endpoints

local by_key, by_family, bare = {}, {}, {}

for _, family in ipairs(data.families) do
    by_family[family] = {}
end
for _, e in ipairs(data.endpoints) do
    e.name = e.family .. "/" .. e.api
    by_key[e.name] = e
    by_family[e.family][e.api] = e
end
for _, family in ipairs(M.PRECEDENCE) do
    assert(by_family[family], "PRECEDENCE names an unknown family: " .. family)
    for api, e in pairs(by_family[family]) do
        if bare[api] == nil then
            bare[api] = e
        end
    end
end

--- The endpoint of `family` and `api`, or nil.
function M.find(family, api)
    local f = by_family[family]
    return f and f[api]
end

--- The endpoint named "family/api", or nil.
function M.get(name)
    return by_key[name]
end

--- True when `family` is a known family name.
function M.is_family(family)
    return by_family[family] ~= nil
end

--- The endpoint a bare method name stands for, or nil.
function M.bare(api)
    return bare[api]
end

return M
