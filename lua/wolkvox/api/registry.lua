--- Look-ups over the endpoint registry (`wolkvox.api.endpoints`).
-- Also decides which endpoint a bare method name such as `c:agents()` means
-- when several families share an api name: the family that comes first in
-- `PRECEDENCE` takes the bare name; every endpoint stays reachable through
-- its family, `c.real_time:agents()`, and through `c:call(family, api)`.
-- @module wolkvox.api.registry

local data = require "wolkvox.api.endpoints"

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
-- A family the list does not name yet (a newer catalog) still gets its
-- bare methods: after every named one, in the registry's order.
local order = {}
for _, family in ipairs(M.PRECEDENCE) do
    assert(by_family[family], "PRECEDENCE names an unknown family: " .. family)
    order[#order + 1] = family
end
for _, family in ipairs(data.families) do
    local named = false
    for _, f in ipairs(M.PRECEDENCE) do
        named = named or f == family
    end
    if not named then
        order[#order + 1] = family
    end
end
for _, family in ipairs(order) do
    -- Sorted, so which endpoint a name means never depends on hash order.
    local apis = {}
    for api in pairs(by_family[family]) do
        apis[#apis + 1] = api
    end
    table.sort(apis)
    for _, api in ipairs(apis) do
        if bare[api] == nil then
            bare[api] = by_family[family][api]
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

--- The endpoint `v` names: "family/api" or a bare method name ("cdr_1");
-- an endpoint (a table) is itself.  Nil for anything else.
function M.lookup(v)
    if type(v) == "table" then
        return v
    elseif type(v) == "string" then
        return v:find("/", 1, true) and by_key[v] or bare[v]
    end
    return nil
end

--- The edit distance of `a` and `b` (optimal string alignment: insertions,
-- deletions, substitutions and swaps of two neighbours each count 1), or
-- `limit + 1` as soon as it is known to be more than `limit`.
function M.distance(a, b, limit)
    local la, lb = #a, #b
    limit = limit or math.huge
    if math.abs(la - lb) > limit then
        return limit + 1
    end
    local prev2, prev, cur = {}, {}, {}
    for j = 0, lb do
        prev[j] = j
    end
    for i = 1, la do
        cur[0] = i
        local best = i
        local ca = a:byte(i)
        for j = 1, lb do
            local cb = b:byte(j)
            local d = prev[j - 1] + (ca == cb and 0 or 1)
            if prev[j] + 1 < d then d = prev[j] + 1 end
            if cur[j - 1] + 1 < d then d = cur[j - 1] + 1 end
            if i > 1 and j > 1 and ca == b:byte(j - 1) and a:byte(i - 1) == cb and prev2[j - 2] + 1 < d then
                d = prev2[j - 2] + 1
            end
            cur[j] = d
            if d < best then best = d end
        end
        if best > limit then
            return limit + 1
        end
        prev2, prev, cur = prev, cur, prev2
    end
    return prev[lb]
end

--- The names of `candidates` (a list, or the keys of a set) near `name`:
-- at most 3, closest first, within an edit distance that grows with the
-- name's length (1 up to 4 characters, 2 up to 8, 3 beyond).
function M.near(name, candidates)
    local limit = #name <= 4 and 1 or (#name <= 8 and 2 or 3)
    local found = {}
    local function consider(c)
        if type(c) == "string" and c ~= name then
            local d = M.distance(name, c, limit)
            if d <= limit then
                found[#found + 1] = { c, d }
            end
        end
    end
    if candidates[1] ~= nil then
        for _, c in ipairs(candidates) do
            consider(c)
        end
    else
        for c in pairs(candidates) do
            consider(c)
        end
    end
    table.sort(found, function(x, y)
        if x[2] ~= y[2] then
            return x[2] < y[2]
        end
        return x[1] < y[1]
    end)
    local out = {}
    for i = 1, math.min(3, #found) do
        out[i] = found[i][1]
    end
    return out
end

--- " (did you mean 'a' or 'b'?)" for the names near `name`, or "".
function M.suggest(name, candidates)
    local list = M.near(name, candidates)
    if #list == 0 then
        return ""
    end
    return " (did you mean '" .. table.concat(list, "' or '") .. "'?)"
end

--- The names a client answers to without a family: bare api names and
-- family names (a set).
function M.method_names()
    local out = {}
    for api in pairs(bare) do
        out[api] = true
    end
    for family in pairs(by_family) do
        out[family] = true
    end
    return out
end

--- The api names of `family` (a set), or nil.
function M.apis(family)
    return by_family[family]
end

return M
