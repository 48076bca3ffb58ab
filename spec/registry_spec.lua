-- The whole registry against the fake: every endpoint callable, writes with
-- the right method and body, chunked uploads, multipart, data shapes.
local cjson = require "cjson"
local registry = require "wolkvox.api.registry"
local support = require "support"

-- The smallest parameter table endpoint `e` accepts.
local function minimal(e)
    local p = {}
    for _, q in ipairs(e.query) do
        if q.required and q.date and q.name ~= "date_ini" and q.name ~= "date_end" then
            p[q.name] = "2026-01-05 10:00"      -- a date that is not the range (agentbox recall)
        elseif q.required and not q.date then
            p[q.name] = q.values and q.values[1] or "1"
        end
    end
    if e.dates then
        p.from, p.to = "2026-01-05", "2026-01-05"
    end
    local b = e.body
    if b and b.kind == "json_object" then
        local f = b.fields[1]
        local sample = { string = "1", integer = 1, array = { "1" }, object = { a = "1" } }
        p[f.name] = sample[f.type]
        for _, fld in ipairs(b.fields) do
            if fld.required or fld.name == e.chunk_field then
                p[fld.name] = sample[fld.type]
            end
        end
        -- What the fake checks as the vendor documents: an IPv4 address in
        -- four parts, a chat code the operation allows.
        if p.ip then
            p.ip = "203.0.113.7"
        end
        for _, fld in ipairs(b.fields) do
            if fld.name == "codAct" then
                p.codAct = "1"
            end
        end
    elseif b and b.kind == "json_array" then
        p.records = { { [b.fields[1].name] = "1" } }
    elseif b and b.kind == "multipart" then
        p.file = { data = "hello", filename = "hello.txt" }
    end
    return p
end

local function is_list(t)
    return type(t) == "table" and (t[1] ~= nil or next(t) == nil)
end

describe("the endpoint registry", function()
    local srv, c
    support.suite(nil, nil, function(s, x) srv, c = s, x end)

    it("has the 242 endpoints of the 14 families", function()
        assert.equal(242, #registry.endpoints)
        assert.equal(14, #registry.families)
        local kinds = {}
        for _, e in ipairs(registry.endpoints) do
            kinds[e.kind] = (kinds[e.kind] or 0) + 1
            assert.matches("^[A-Z]+$", e.method)
            assert.is_table(e.query)
            assert.is_table(e.fields)
        end
        assert.same({ detail = 62, aggregate = 51, snapshot = 10, lookup = 49, action = 70 }, kinds)
        assert.is_true(registry.find("agentbox", "dial").free)
        assert.equal(24, registry.find("reports_manager", "skill_5").max_hours)
        assert.equal("hour", registry.find("reports_manager", "agent_8").split)
    end)

    it("answers every endpoint through the client, in its documented shape", function()
        local shapes = {}
        for _, e in ipairs(registry.endpoints) do
            local data, meta = c:call(e.family, e.api, minimal(e))
            assert.is_not_nil(data, e.name .. ": " .. tostring(meta))
            assert.equal(e.name, meta.endpoint)
            local shape = e.shape
            local lists = { list = true, list_nested = true, bare_list = true, top_level_records = true }
            if e.chunk then
                -- Chunked uploads answer a result per chunk.
                assert.equal(1, #data, e.name)
                assert.equal(1, data[1].first)
            elseif lists[shape] then
                assert.is_true(is_list(data), e.name .. " should give a list")
            elseif shape == "object" then
                assert.is_table(data, e.name)
                assert.is_nil(data[1], e.name .. " should give an object")
            elseif shape == "string" then
                assert.is_string(data, e.name)
            elseif shape == "none" then
                assert.same({}, data, e.name)
            end
            shapes[shape] = true
        end
        for _, s in ipairs { "list", "list_nested", "bare_list", "top_level_records", "object", "string", "none" } do
            assert.is_true(shapes[s], s)
        end
        -- One request per endpoint, each with the method the registry names.
        local log = srv:log()
        assert.equal(242, #log)
        for i, e in ipairs(registry.endpoints) do
            assert.equal(e.method, log[i].method, e.name)
            assert.equal(e.family, log[i].family)
            assert.equal(e.api, log[i].api)
        end
    end)

    it("exposes campaign_15's top-level records and total", function()
        local rows, meta = c:campaign_15 { campaign_id = "7" }
        assert.is_true(#rows > 0)
        assert.is_string(rows[1].nombre_cliente)
        assert.equal(#rows, meta.total_records)
    end)

    it("sends JSON bodies with the method the registry names, DELETE included", function()
        local cases = {
            { "configuration", "add_ip", { ip = "10.0.0.1", description = "office", permanent = "1" } },
            { "configuration", "remove_ip", { ip = "10.0.0.1" } },
            { "configuration", "remove_dnc", { telephones = { "3001", "3002" }, type = "all" } },
            { "campaign", "delete_campaign", { type_campaign = "preview", campaign_ids = { "4", "5" } } },
            { "sms", "send_sms", { telephone = "573001112233", message = "Hola, ¿cómo está?" } },
        }
        for i, case in ipairs(cases) do
            local data, meta = c:call(case[1], case[2], case[3])
            assert.is_table(data, tostring(meta))
            local entry = srv:log()[i]
            assert.equal(registry.find(case[1], case[2]).method, entry.method)
            assert.equal("application/json", entry.headers["content-type"])
            local body = cjson.decode(entry.body)
            for k, v in pairs(case[3]) do
                if k ~= "type_campaign" then
                    assert.same(v, body[k])
                end
            end
        end
        assert.equal("DELETE", srv:log()[2].method)
        assert.equal("preview", srv:log()[4].params.type_campaign)
        assert.is_nil(cjson.decode(srv:log()[4].body).type_campaign) -- a query parameter only
    end)

    it("sends a name listed in the query and the body in both (list_templates)", function()
        assert(c:list_templates { connector_id = "9" })
        local entry = srv:log()[1]
        assert.equal("GET", entry.method)
        assert.equal("9", entry.params.connector_id)
        assert.equal('{"connector_id":"9"}', entry.body)
    end)

    it("refuses unknown body fields and wrong field types before sending", function()
        local _, err = c:add_ip { ip = "10.0.0.1", color = "red" }
        assert.equal("params", err.kind)
        assert.matches("unknown parameter 'color'", err.message)
        _, err = c:remove_dnc { telephones = "3001" }
        assert.equal("params", err.kind)
        assert.matches("must be a list", err.message)
        _, err = c:recall_records { campaign_id = "1", field = "x" }
        assert.matches("missing required field 'value'", err.message)
        _, err = c:services { body = { a = 1 } }
        assert.equal("params", err.kind)
        assert.equal(0, #srv:log())
    end)

    describe("uploads of records", function()
        local function records(n, extra)
            local out = {}
            for i = 1, n do
                out[i] = { customer_id = tostring(i), customer_name = "Cliente " .. i, tel1 = "57300" .. i }
                for k, v in pairs(extra or {}) do
                    out[i][k] = v
                end
            end
            return out
        end

        it("go in chunks of at most 10,000 records, with a result per chunk", function()
            local results, meta = c:add_record { type_campaign = "predictive", campaign_id = "12",
                records = records(25000) }
            assert.is_table(results, tostring(meta))
            assert.equal(3, #results)
            assert.same({ 1, 10000 }, { results[1].first, results[1].last })
            assert.same({ 10001, 20000 }, { results[2].first, results[2].last })
            assert.same({ 20001, 25000 }, { results[3].first, results[3].last })
            assert.equal(3, meta.calls)
            local log = srv:log()
            assert.equal(3, #log)
            local sizes, next_id = {}, 1
            for i, entry in ipairs(log) do
                assert.equal("POST", entry.method)
                assert.equal("12", entry.params.campaign_id)
                local body = cjson.decode(entry.body)
                sizes[i] = #body
                for _, rec in ipairs(body) do
                    assert.equal(tostring(next_id), rec.customer_id)
                    next_id = next_id + 1
                end
            end
            assert.same({ 10000, 10000, 5000 }, sizes)
        end)

        it("are checked before the first chunk: field names and opt lengths", function()
            local long = string.rep("ñ", 101)
            local _, err = c:add_record { type_campaign = "preview", campaign_id = "1",
                records = records(3, { opt2 = long }) }
            assert.equal("params", err.kind)
            assert.matches("record 1: 'opt2' has 101 characters, the API takes at most 100", err.message)
            assert(c:add_record { type_campaign = "preview", campaign_id = "1",
                records = records(1, { opt2 = string.rep("ñ", 100), opt7 = string.rep("a", 200) }) })
            _, err = c:add_record { type_campaign = "preview", campaign_id = "1",
                records = records(1, { opt9 = string.rep("a", 201) }) }
            assert.matches("'opt9' has 201", err.message)
            _, err = c:add_record { type_campaign = "preview", campaign_id = "1",
                records = records(1, { favourite_colour = "red" }) }
            assert.matches("unknown field 'favourite_colour'", err.message)
            _, err = c:add_record { type_campaign = "sideways", campaign_id = "1", records = records(1) }
            assert.matches("must be one of predictive, preview", err.message)
            _, err = c:add_record { type_campaign = "preview", campaign_id = "1", records = {} }
            assert.matches("non%-empty list", err.message)
            assert.equal(1, #srv:log())
        end)

        it("chunk a list field of an object body too (configuration add_dnc)", function()
            local phones = {}
            for i = 1, 12000 do
                phones[i] = "57300" .. i
            end
            local results = assert(c.configuration:add_dnc { type_call = "outbound", telephones = phones })
            assert.equal(2, #results)
            local log = srv:log()
            assert.equal(2, #log)
            local first, second = cjson.decode(log[1].body), cjson.decode(log[2].body)
            assert.equal(10000, #first.telephones)
            assert.equal(2000, #second.telephones)
            assert.equal("outbound", second.type_call)
            assert.equal("5730010001", second.telephones[1])
        end)

        it("go one at a time, stop at a failing chunk and say which records were accepted", function()
            support.faults(srv, { { match = "add_record", forbidden = "quota" } })
            -- The first chunk is refused: nothing was accepted.
            local _, err = c:add_record { type_campaign = "predictive", campaign_id = "12",
                records = records(15000) }
            assert.equal("quota", err.kind)
            assert.same({ first = 1, last = 10000 }, err.chunk)
            assert.matches("records 1%-10000; 0 before them were accepted", err.message)
            assert.equal(1, #srv:log())
            -- A failure after the first chunk.
            srv:control("reset")
            support.faults(srv, { { match = "add_record", delay = 0.05 },
                { match = "add_record", status = 500 } })
            _, err = c:add_record { type_campaign = "predictive", campaign_id = "12", records = records(25000) }
            assert.equal("http", err.kind)
            assert.same({ first = 10001, last = 20000 }, err.chunk)
            assert.matches("10000 before them were accepted", err.message)
            assert.equal(2, #srv:log())
            assert.equal(1, srv:control("stats").max_inflight)
        end)
    end)

    describe("multipart uploads", function()
        it("send files and fields as parts", function()
            local path = os.tmpname()
            local f = assert(io.open(path, "wb"))
            f:write("%PDF-1.4 test")
            f:close()
            local data = assert(c:upload_files { files = { path, { data = "second", filename = "b.txt" } },
                path = "reports/2026/" })
            os.remove(path)
            assert.is_table(data)
            local entry = srv:log()[1]
            assert.equal("POST", entry.method)
            assert.matches("^multipart/form%-data", entry.headers["content-type"])
            local _, nfiles = entry.body:gsub('name="file%[%]"', "")
            assert.equal(2, nfiles)
            assert.truthy(entry.body:find("%PDF-1.4 test", 1, true))
            assert.truthy(entry.body:find('name="path"', 1, true))
            assert.truthy(entry.body:find("reports/2026/", 1, true))
        end)

        it("refuse a missing file, or more than 50 audios, before sending", function()
            local _, err = c:upload_file { file = "/nonexistent/file.pdf" }
            assert.equal("params", err.kind)
            assert.matches("cannot read file", err.message)
            local many = {}
            for i = 1, 51 do
                many[i] = { data = "RIFF", filename = i .. ".wav" }
            end
            _, err = c:upload_audio { files = many }
            assert.matches("at most 50", err.message)
            _, err = c:upload_file {}
            assert.matches("a file to upload is needed", err.message)
            assert.equal(0, #srv:log())
        end)
    end)

    it("names several parts as each endpoint documents: file1, file2 (upload_audio) or file[]", function()
        local hostile = require "hostile"
        local ok = hostile.json(200, '{"code":"200","msg":"ok","data":[]}')
        local h = hostile.start { responses = { ok, ok } }
        local x = support.client({ url = h.url, token = "t" }, { retries = 0 })
        local two = { { data = "RIFF", filename = "a.wav" }, { data = "RIFF", filename = "b.wav" } }
        assert(x:upload_audio { files = two })
        assert(x:upload_files { files = two })
        x:close()
        local texts = h:requests()
        h:stop()
        assert.matches('name="file1"', texts[1], 1, true)
        assert.matches('name="file2"', texts[1], 1, true)
        assert.is_nil(texts[1]:find('name="file[]"', 1, true))
        assert.matches('name="file[]"', texts[2], 1, true)
        assert.is_nil(texts[2]:find('name="file1"', 1, true))
    end)

    it("gives a family the precedence list does not name its bare methods too", function()
        local code = [[
            local data = require "wolkvox.api.endpoints"
            table.insert(data.families, "brand_new")
            table.insert(data.endpoints, { family = "brand_new", api = "brand_new_report", method = "GET",
                kind = "lookup", query = {}, fields = {} })
            local registry = require "wolkvox.api.registry"
            io.write(tostring(registry.bare("brand_new_report") and registry.bare("brand_new_report").family), " ",
                registry.bare("agents").family, "\n")
        ]]
        local p = io.popen(support.lua_command(code) .. " 2>&1")
        local out = p:read("*a")
        p:close()
        assert.equal("brand_new information\n", out)
    end)

    it("exposes the per-file results of a 207 multi-status", function()
        local data, meta = c:delete_files { files = { "old/a.wav", "new/b.wav", "old/c.wav" } }
        assert.is_table(data, tostring(meta))
        assert.equal(207, meta.status)
        assert.equal(3, #meta.items)
        assert.same({ true, false, true }, { meta.items[1].ok, meta.items[2].ok, meta.items[3].ok })
        assert.equal(403, meta.items[2].code)
        assert.equal("new/b.wav", meta.items[2].name)
        assert.equal(1, meta.failed)
    end)

    it("sends writes on a fresh connection, reads on a kept one", function()
        c:services()
        c:services()
        c:add_ip { ip = "10.0.0.2", description = "x" }
        local log = srv:log()
        assert.equal(log[1].conn, log[2].conn)
        assert.are_not.equal(log[2].conn, log[3].conn)
    end)
end)
