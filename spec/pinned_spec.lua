-- Facts of the vendor's documentation, pinned (issue #10).  The registry
-- (lua/wolkvox/api/endpoints.lua) is generated from the catalog, and the fake
-- builds its answers from the registry: a wrong registry entry would pass
-- every spec that reads the registry.  Here the facts of a dozen endpoints
-- are written out literally, as /work/shared/wolkvox-api (README.md and
-- catalog.json) states them, and checked twice: in the registry entry, and
-- in the request the client actually sends (the fake's log).
local cjson = require "cjson"
local registry = require "wolkvox.api.registry"
local support = require "support"

-- family, api, method, kind, date range, quota-free, required and optional
-- query parameters (besides api=), body kind, and the endpoint's own rules.
local PINNED = {
    { "reports_manager", "cdr_1", "GET", "detail", dates = true, free = false,
        required = { "date_ini", "date_end" }, optional = {} },
    { "reports_manager", "cdr_4", "GET", "aggregate", dates = true, free = false, shape = "object",
        required = { "date_ini", "date_end" }, optional = {} },
    { "reports_manager", "agent_8", "GET", "detail", dates = true, free = false, split = "hour",
        required = { "date_ini", "date_end" }, optional = {} },
    { "reports_manager", "agent_8_1", "GET", "detail", dates = true, free = false, split = "30min",
        required = { "date_ini", "date_end" }, optional = {} },
    { "reports_manager", "skill_5", "GET", "aggregate", dates = true, free = false, max_hours = 24,
        required = { "skill_id", "date_ini", "date_end" }, optional = {} },
    { "reports_manager", "diagram_9", "GET", "detail", dates = true, free = false, max_rows = 6000,
        required = { "date_ini", "date_end" }, optional = {} },
    { "reports_manager", "campaign_5", "GET", "detail", dates = true, free = false, no_split = true,
        required = { "campaign_id", "date_ini", "date_end" }, optional = {} },
    { "information", "services", "GET", "lookup", dates = false, free = false,
        required = {}, optional = {} },
    { "information", "token_info", "GET", "lookup", dates = false, free = false,
        required = {}, optional = {} },
    { "billing", "rec_screen", "GET", "lookup", dates = false, free = false,
        required = {}, optional = {} },
    { "campaign", "add_record", "POST", "action", dates = false, free = false, body = "json_array", chunk = 10000,
        required = { "type_campaign", "campaign_id" }, optional = { "campaign_status" } },
    { "agentbox", "change_status", "POST", "action", dates = false, free = true,
        required = { "status", "agent_id" }, optional = {} },
    { "agentbox", "dial", "POST", "action", dates = false, free = true,
        required = { "agent_id", "customer_phone" }, optional = { "customer_id", "customer_name" } },
    { "wolkvox_storage", "delete_files", "POST", "action", dates = false, free = false, body = "json_object",
        required = {}, optional = {} },
}

-- The sorted names of `list`.
local function sorted(list)
    local out = {}
    for i, v in ipairs(list) do
        out[i] = v
    end
    table.sort(out)
    return out
end

-- Required and optional query parameter names of a registry entry.
local function params_of(e)
    local req, opt = {}, {}
    for _, p in ipairs(e.query or {}) do
        if p.required then
            req[#req + 1] = p.name
        else
            opt[#opt + 1] = p.name
        end
    end
    return sorted(req), sorted(opt)
end

-- Method, path and sorted query parameter names of a logged request line.
local function request_of(entry)
    local method, path, query = entry.line:match("^(%u+) ([^?%s]+)%??(%S*) HTTP/1%.1$")
    local names = {}
    for pair in query:gmatch("[^&]+") do
        names[#names + 1] = pair:match("^([^=]*)")
    end
    return method, path, sorted(names)
end

describe("pinned vendor facts", function()
    local srv, c
    support.suite({}, { state_dir = false }, function(s, x) srv, c = s, x end)

    describe("in the registry", function()
        for _, p in ipairs(PINNED) do
            local family, api = p[1], p[2]
            it(family .. "/" .. api, function()
                local e = registry.find(family, api)
                assert.is_table(e, "missing from the registry")
                assert.equal(p[3], e.method)
                assert.equal(p[4], e.kind)
                assert.equal(p.dates, e.dates == true)
                assert.equal(p.free, e.free == true)
                local req, opt = params_of(e)
                assert.same(sorted(p.required), req)
                assert.same(sorted(p.optional), opt)
                assert.equal(p.body, e.body and e.body.kind or nil)
                assert.equal(p.split, e.split)
                assert.equal(p.max_hours, e.max_hours)
                assert.equal(p.max_rows, e.max_rows)
                assert.equal(p.no_split, e.no_split)
                assert.equal(p.chunk, e.chunk)
                if p.shape then
                    assert.equal(p.shape, e.shape)
                end
            end)
        end

        it("every other report has the 60,000-row cap and may be split anywhere", function()
            assert.is_nil(registry.find("reports_manager", "cdr_1").max_rows)
            assert.is_nil(registry.find("reports_manager", "cdr_1").split)
            assert.is_nil(registry.find("reports_manager", "cdr_1").no_split)
        end)
    end)

    describe("on the wire", function()
        it("c:cdr_1 is GET reports_manager.php?api=cdr_1 with date_ini and date_end", function()
            assert(c:cdr_1 { from = "2026-03-01", to = "2026-03-02" })
            local log = srv:log()
            assert.equal(1, #log)
            local method, path, names = request_of(log[1])
            assert.equal("GET", method)
            assert.equal("/api/v2/reports_manager.php", path)
            assert.same({ "api", "date_end", "date_ini" }, names)
            assert.equal("cdr_1", log[1].params.api)
            assert.equal("20260301000000", log[1].params.date_ini)
            assert.equal("20260302235959", log[1].params.date_end)
            assert.equal("<redacted>", log[1].headers["wolkvox-token"])  -- the token went as the header
            assert.is_nil(log[1].line:find(srv.token, 1, true))
        end)

        it("lookups are GET without parameters: services, token_info, rec_screen", function()
            for _, t in ipairs { { "information", "services" }, { "information", "token_info" },
                { "billing", "rec_screen" } } do
                srv:control("reset")
                assert(c:call(t[1], t[2]))
                local method, path, names = request_of(srv:log()[1])
                assert.equal("GET", method)
                assert.equal("/api/v2/" .. t[1] .. ".php", path)
                assert.same({ "api" }, names)
                assert.equal(t[2], srv:log()[1].params.api)
            end
        end)

        it("skill_5 takes skill_id and at most 24 hours", function()
            assert(c:skill_5 { skill_id = "all", from = "2026-03-01 00:00:00", to = "2026-03-01 23:59:59" })
            local _, path, names = request_of(srv:log()[1])
            assert.equal("/api/v2/reports_manager.php", path)
            assert.same({ "api", "date_end", "date_ini", "skill_id" }, names)
            local rows, err = c:skill_5 { skill_id = "all", from = "2026-03-01 00:00:00", to = "2026-03-02 00:00:00" }
            assert.is_nil(rows)
            assert.equal("params", err.kind)
            assert.equal(1, #srv:log())
        end)

        it("campaign_5 takes campaign_id and one call for up to 31 days", function()
            local p = assert(c:plan("campaign_5", { campaign_id = "all", from = "2026-03-01", to = "2026-03-31" }))
            assert.equal(1, p.calls)
            assert(c:campaign_5 { campaign_id = "all", from = "2026-03-01", to = "2026-03-31" })
            local _, path, names = request_of(srv:log()[1])
            assert.equal("/api/v2/reports_manager.php", path)
            assert.same({ "api", "campaign_id", "date_end", "date_ini" }, names)
        end)

        it("c:add_record is POST campaign.php with a JSON array body, 10,000 records a call", function()
            local records = {}
            for i = 1, 10001 do
                records[i] = { customer_name = "n" .. i, customer_id = tostring(i), tel1 = "573000000" }
            end
            local results, meta = c:add_record { type_campaign = "preview", campaign_id = "7", records = records }
            assert.is_table(results, tostring(meta))
            local log = srv:log()
            assert.equal(2, #log)
            local sizes = {}
            for i, entry in ipairs(log) do
                local method, path, names = request_of(entry)
                assert.equal("POST", method)
                assert.equal("/api/v2/campaign.php", path)
                assert.same({ "api", "campaign_id", "type_campaign" }, names)
                assert.equal("add_record", entry.params.api)
                assert.matches("^application/json", entry.headers["content-type"])
                local body = cjson.decode(entry.body)
                assert.is_nil(body.records)        -- the array itself, not an object around it
                sizes[i] = #body
            end
            assert.same({ 10000, 1 }, sizes)
        end)

        it("an agentbox call is POST agentbox.php and costs no quota", function()
            local x = support.client(srv, { state_dir = support.tmpdir() })
            assert(x:services())
            local before = srv:control("stats").quota_used
            assert.equal(1, before)
            assert(x.agentbox:change_status { status = "ready", agent_id = "1001" })
            assert(x.agentbox:dial { agent_id = "1001", customer_phone = "573001234567" })
            local log = srv:log()
            assert.equal(3, #log)
            for i = 2, 3 do
                local method, path = request_of(log[i])
                assert.equal("POST", method)
                assert.equal("/api/v2/agentbox.php", path)
            end
            assert.same({ "agent_id", "api", "status" }, select(3, request_of(log[2])))
            assert.same({ "agent_id", "api", "customer_phone" }, select(3, request_of(log[3])))
            -- neither the server nor the client's ledger counted them
            assert.equal(before, srv:control("stats").quota_used)
            assert.equal(1, x:quota({ measure = false }).used)
            assert.equal(3, x:stats().calls)
            x:close()
        end)

        it("delete_files is POST wolkvox_storage.php with a JSON object body", function()
            assert(c.wolkvox_storage:delete_files { files = { "old.wav" } })
            local entry = srv:log()[1]
            local method, path = request_of(entry)
            assert.equal("POST", method)
            assert.equal("/api/v2/wolkvox_storage.php", path)
            assert.same({ "old.wav" }, cjson.decode(entry.body).files)
        end)
    end)
end)
