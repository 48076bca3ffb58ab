-- The fake's documented behaviours (the catalog's codes and limits), asked
-- through the in-process transport: the same request handler the HTTP fake
-- runs, without a socket.
local cjson = require "cjson"
local fake = require "wolkvox.transport.fake"
local rules = require "wolkvox.fake.rules"
local fake_api = require "wolkvox.fake.api"

local BASE = "http://fake.invalid/api/v2/"

-- One request: status and decoded answer.
local function ask(t, family, api, opts)
    opts = opts or {}
    local url = BASE .. family .. ".php?api=" .. api .. (opts.query or "")
    local body = opts.body
    if type(body) == "table" then
        body = next(body) == nil and (opts.array and "[]" or "{}") or cjson.encode(body)
    end
    t:start { method = opts.method or "POST", url = url, body = body, parts = opts.parts,
        content_type = body and "application/json" or nil }
    local _, res = t:wait()
    return res.status, res.value
end

local function open(settings)
    local srv = fake.server(settings)
    return fake.new({ fake = srv, timeout = 5 }, "test-token"), srv
end

local function pages(t, body_of, next_of)
    local seen, token, n = {}, "", 0
    repeat
        n = n + 1
        assert(n < 100, "the loop did not end")
        local status, v = ask(t, "wolkvox_storage", "list_files", { body = body_of(token) })
        assert.equal(200, status)
        for _, item in ipairs(v.data.items) do
            seen[#seen + 1] = item.file_name
        end
        token = next_of(v)
    until token == ""
    return seen, n
end

describe("the fake's documented answers", function()
    describe("cursors", function()
        it("list_files pages with page_token and ends with an empty next_page_token", function()
            local t = open { storage_files = 23 }
            local seen, calls = pages(t, function(token)
                return token == "" and { limit = 10 } or { limit = 10, page_token = token }
            end, function(v) return v.data.pagination.next_page_token end)
            assert.equal(3, calls)
            assert.equal(23, #seen)
            assert.equal("file-001.wav", seen[1])
            assert.equal("file-023.wav", seen[23])
            local status = ask(t, "wolkvox_storage", "list_files", { body = { page_token = "bogus" } })
            assert.equal(400, status)
            -- isDirectory is "true"/"false" as documented
            local _, v = ask(t, "wolkvox_storage", "list_files", { body = {} })
            assert.equal("false", v.data.items[1].isDirectory)
        end)

        it("conversations_today_by_customer pages with pagina_mensajes", function()
            local t = open { chat_messages = 25 }
            local total = 0
            for page = 1, 4 do
                local status, v = ask(t, "whatsapp", "conversations_today_by_customer",
                    { body = { chat_id = "9", pagina_mensajes = page } })
                assert.equal(200, status)
                local row = v.data[1]
                assert.equal("3", row.paginacion_mensajes.total_paginas)
                assert.equal("25", row.paginacion_mensajes.total_mensajes)
                total = total + #row.conversacion
                if page == 4 then
                    assert.equal(0, #row.conversacion)
                end
            end
            assert.equal(25, total)
        end)
    end)

    describe("writes", function()
        it("add_ip / remove_ip: 404 registered or not, 406 invalid, 5 permanent IPs at most", function()
            local t = open()
            assert.equal(406, (ask(t, "configuration", "add_ip", { body = { ip = "300.1.1.1", description = "x" } })))
            assert.equal(406, (ask(t, "configuration", "add_ip", { body = { ip = "nope", description = "x" } })))
            local status, v = ask(t, "configuration", "add_ip", { body = { ip = "10.0.0.1", description = "x" } })
            assert.equal(200, status)
            assert.equal("201", v.code)
            status, v = ask(t, "configuration", "add_ip", { body = { ip = "10.0.0.1", description = "x" } })
            assert.equal(404, status)
            assert.equal(rules.MSG.ip_registered, v.msg)
            local function remove(ip)
                return (ask(t, "configuration", "remove_ip", { method = "DELETE", body = { ip = ip } }))
            end
            assert.equal(404, remove("10.9.9.9"))
            assert.equal(406, remove("1.2.3.999"))
            assert.equal(200, remove("10.0.0.1"))
            for i = 1, 5 do
                assert.equal(200, (ask(t, "configuration", "add_ip",
                    { body = { ip = "10.1.0." .. i, permanent = "yes", description = "p" } })))
            end
            status, v = ask(t, "configuration", "add_ip",
                { body = { ip = "10.1.0.6", permanent = "yes", description = "p" } })
            assert.equal(400, status)
            assert.equal(rules.MSG.ip_cap, v.msg)
            -- a temporary IP is still allowed
            assert.equal(200, (ask(t, "configuration", "add_ip", { body = { ip = "10.1.0.7", description = "t" } })))
        end)

        it("codify_chat answers 422 with the vendor's message for a code not allowed in chats", function()
            local t = open { chat_codes = { "7" } }
            local function codify(code)
                return ask(t, "whatsapp", "codify_chat", { body = { agent = "1", chat_id = "2", codAct = code } })
            end
            local status, v = codify("8")
            assert.equal(422, status)
            assert.equal("El codAct no es valido para la operacion del chat.", v.msg)
            assert.equal(200, (codify("7")))
        end)

        it("add_record refuses 10,001 records, a 300-character opt1, type_campaign = bogus", function()
            local t = open()
            local q = "&type_campaign=preview&campaign_id=1"
            local records = {}
            for i = 1, 10001 do
                records[i] = { customer_id = tostring(i), tel1 = "3001" }
            end
            local status, v = ask(t, "campaign", "add_record", { query = q, body = records })
            assert.equal(400, status)
            assert.equal(rules.MSG.too_many_records, v.msg)
            records[10001] = nil
            status, v = ask(t, "campaign", "add_record", { query = q, body = records })
            assert.equal(200, status)
            assert.equal("10000", v.data[1].total_registers)
            status = ask(t, "campaign", "add_record", { query = q, body = { { opt1 = string.rep("x", 300) } } })
            assert.equal(400, status)
            assert.equal(200, (ask(t, "campaign", "add_record",
                { query = q, body = { { opt7 = string.rep("x", 200), opt1 = string.rep("ñ", 100) } } })))
            status, v = ask(t, "campaign", "add_record",
                { query = "&type_campaign=bogus&campaign_id=1", body = { { tel1 = "1" } } })
            assert.equal(400, status)
            assert.equal(rules.MSG.invalid_value, v.msg)
        end)

        it("refuses {} bodies of writes with required fields, with 400 SOME PARAMETERS ARE REQUIRED", function()
            local t = open()
            for _, case in ipairs { { "configuration", "add_ip" }, { "sms", "send_sms" },
                { "configuration", "create_agent" }, { "whatsapp", "codify_chat" } } do
                local status, v = ask(t, case[1], case[2], { body = {} })
                assert.equal(400, status, case[2])
                assert.equal("SOME PARAMETERS ARE REQUIRED", v.msg, case[2])
            end
        end)

        it("upload_files needs a file; upload_audio takes 50 files at most", function()
            local t = open()
            local status, v = ask(t, "wolkvox_storage", "upload_files", { parts = { { name = "path", data = "/x" } } })
            assert.equal(400, status)
            assert.matches("^File upload is required", v.msg)
            assert.equal(200, (ask(t, "wolkvox_storage", "upload_files",
                { parts = { { name = "file", data = "RIFF", filename = "a.wav" } } })))
            local parts = {}
            for i = 1, 51 do
                parts[i] = { name = "file" .. i, data = "RIFF", filename = "a" .. i .. ".wav" }
            end
            status, v = ask(t, "configuration", "upload_audio", { parts = parts })
            assert.equal(400, status)
            assert.equal(rules.MSG.too_many_files, v.msg)
            parts[51] = nil
            assert.equal(200, (ask(t, "configuration", "upload_audio", { parts = parts })))
        end)

        it("delete_files answers 200 when every file was deleted, 207 when some were refused", function()
            local t = open()
            local status, v = ask(t, "wolkvox_storage", "delete_files", { body = { files = { "old/a", "old/b" } } })
            assert.equal(200, status)
            assert.equal("200", v.code)
            status, v = ask(t, "wolkvox_storage", "delete_files", { body = { files = { "old/a", "new/b" } } })
            assert.equal(207, status)
            assert.equal("403", v.data.files[2].code)
        end)
    end)

    describe("codes and shapes", function()
        it("activity_codes answers code \"0\"; agent_13_1 answers [] for an empty window", function()
            local t = open { rows_per_day = 1 }
            local status, v = ask(t, "information", "activity_codes", { method = "GET" })
            assert.equal(200, status)
            assert.equal("0", v.code)
            status, v = ask(t, "reports_manager", "agent_13_1",
                { method = "GET", query = "&date_ini=20260101100000&date_end=20260101100010" })
            assert.equal(200, status)
            assert.same({}, v.data)
            status = ask(t, "reports_manager", "agent_1",
                { method = "GET", query = "&date_ini=20260101100000&date_end=20260101100010" })
            assert.equal(200, status)
            status = ask(t, "reports_manager", "cdr_1",
                { method = "GET", query = "&date_ini=20260101100000&date_end=20260101100010" })
            assert.equal(404, status)
        end)

        it("answers 404 for an endpoint disabled on this server (setting `disabled`)", function()
            local t, srv = open { disabled = { "reports_manager/chat_7" } }
            local q = "&date_ini=20260101000000&date_end=20260102000000"
            local status, v = ask(t, "reports_manager", "chat_7", { method = "GET", query = q })
            assert.equal(404, status)
            assert.equal(rules.MSG.disabled, v.msg)
            assert.equal(200, (ask(t, "reports_manager", "chat_6", { method = "GET", query = q })))
            srv:control("config", { disabled = {} })
            assert.equal(200, (ask(t, "reports_manager", "chat_7", { method = "GET", query = q })))
        end)

        it("caps diagram_9 at its own 6,000 rows, other reports at max_rows", function()
            local t = open { rows_per_day = 10000 }
            local q = "&date_ini=20260101000000&date_end=20260101235959"
            local _, v = ask(t, "reports_manager", "diagram_9", { method = "GET", query = q })
            assert.equal(6000, #v.data)
            _, v = ask(t, "reports_manager", "cdr_1", { method = "GET", query = q })
            assert.equal(10000, #v.data)
        end)

        it("truncates a window as a time-ordered prefix or an arbitrary subset (setting `truncation`)", function()
            local q = "&date_ini=20260101000000&date_end=20260101235959"
            local t = open { rows_per_day = 1000, max_rows = 100 }
            local _, v = ask(t, "reports_manager", "cdr_1", { method = "GET", query = q })
            assert.equal(100, #v.data)
            local prefix = {}
            for i, row in ipairs(v.data) do
                prefix[i] = row.conn_id
                if i > 1 then
                    assert.is_true(tonumber(row.conn_id) == tonumber(v.data[i - 1].conn_id) + 1)
                end
            end
            t = open { rows_per_day = 1000, max_rows = 100, truncation = "subset" }
            _, v = ask(t, "reports_manager", "cdr_1", { method = "GET", query = q })
            assert.equal(100, #v.data)
            local ids, ordered, distinct = {}, true, 0
            for i, row in ipairs(v.data) do
                if not ids[row.conn_id] then
                    distinct = distinct + 1
                end
                ids[row.conn_id] = true
                if i > 1 and tonumber(row.conn_id) < tonumber(v.data[i - 1].conn_id) then
                    ordered = false
                end
            end
            assert.equal(100, distinct)
            assert.is_false(ordered)
            assert.are_not.same(prefix[1], v.data[1].conn_id)
        end)
    end)
end)

describe("the fake's token_info", function()
    it("reports whole numbers, also for a limit set through the control interface", function()
        local t, srv = open()
        srv:control("config", { daily_limit = 100 })
        local status, v = ask(t, "information", "token_info", { method = "GET" })
        assert.equal(200, status)
        assert.equal("100", v.data[1].token_limit)
        assert.equal("1", v.data[1].token_use_today)
        assert.equal("99", v.data[1].available_consumption_options)
    end)
end)

describe("the fake's values", function()
    it("are plain by default; values = \"vendor\" adds the vendor's odd forms, the same in any window", function()
        local q = "&date_ini=20260101000000&date_end=20260101235959"
        local t = open { rows_per_day = 400 }
        local _, v = ask(t, "reports_manager", "agent_1", { method = "GET", query = q })
        local text = cjson.encode(v)
        assert.falsy(text:find('"-"', 1, true))
        t = open { rows_per_day = 400, values = "vendor" }
        local seen = {}
        for _, api in ipairs { "cdr_1", "agent_1", "agent_3", "chat_1" } do
            local _, w = ask(t, "reports_manager", api, { method = "GET", query = q })
            for _, row in ipairs(w.data) do
                for _, x in pairs(row) do
                    if x == "-" or x == "--" or x == "TIMEOUTACW" then
                        seen[x] = true
                    elseif type(x) == "string" and x:match("^%d,%d%d%d%.%d%d %%$") then
                        seen.thousands = true
                    end
                end
            end
        end
        assert.same({ ["-"] = true, ["--"] = true, thousands = true, TIMEOUTACW = true }, seen)
        -- a row is the same whichever window brings it
        local _, whole = ask(t, "reports_manager", "cdr_1", { method = "GET", query = q })
        local _, half = ask(t, "reports_manager", "cdr_1",
            { method = "GET", query = "&date_ini=20260101120000&date_end=20260101235959" })
        assert.same(whole.data[#whole.data], half.data[#half.data])
    end)
end)

describe("the fake's quota and concurrency", function()
    it("count per token and per operation, agentbox free, and token_info tells both", function()
        local srv = fake.server { tokens = { "tok-a", "tok-b" }, daily_limit = 5 }
        local a = fake.new({ fake = srv, timeout = 5 }, "tok-a")
        local b = fake.new({ fake = srv, timeout = 5 }, "tok-b")
        assert.equal(200, (ask(a, "information", "services", { method = "GET" })))
        assert.equal(200, (ask(a, "information", "services", { method = "GET" })))
        assert.equal(200, (ask(b, "information", "services", { method = "GET" })))
        -- agentbox calls need the token but are not counted
        ask(b, "agentbox", "dial", { method = "POST", query = "&agent_id=1&telephone=1" })
        local _, v = ask(b, "information", "token_info", { method = "GET" })
        local row = v.data[1]
        assert.equal("5", row.token_limit)
        assert.equal("2", row.token_use_today)      -- tok-b: services, token_info
        assert.equal("4", row.all_token_today)      -- the operation: every token
        assert.equal("1", row.available_consumption_options)
        assert.equal(200, (ask(a, "information", "services", { method = "GET" })))
        local status
        status, v = ask(b, "information", "services", { method = "GET" })
        assert.equal(403, status)
        assert.equal("TOKEN LIMIT EXCEEDED", v.msg)
        -- the 2 calls in flight are per token: a's two do not block b
        srv:control("reset")
        srv:control("config", { daily_limit = false })
        local url = "http://fake.invalid/api/v2/information.php?api=services"
        a:start { url = url }
        a:start { url = url }
        a:start { url = url }
        b:start { url = url }
        local got = {}
        for _ = 1, 3 do
            local _, res = a:wait()
            got[#got + 1] = res.status
        end
        table.sort(got)
        assert.same({ 200, 200, 403 }, got)
        local _, res = b:wait()
        assert.equal(200, res.status)
    end)
end)

describe("the fake's documented limits", function()
    it("add_ip / remove_ip take four-part addresses only: the short forms are 406", function()
        local t = open()
        for _, ip in ipairs { "1", "10.1", "10.0.1", "10.0.0.1.5", "010.0.0.1000" } do
            local status, v = ask(t, "configuration", "add_ip", { body = { ip = ip, description = "x" } })
            assert.equal(406, status, ip)
            assert.equal(rules.MSG.ip_invalid, v.msg)
        end
        assert.equal(406, (ask(t, "configuration", "remove_ip", { method = "DELETE", body = { ip = "10.1" } })))
        assert.equal(200, (ask(t, "configuration", "add_ip", { body = { ip = "203.0.113.7", description = "x" } })))
    end)

    it("codify_chat without a codAct is 422 too", function()
        local t = open()
        assert.equal(422, (ask(t, "whatsapp", "codify_chat", { body = { agent = "1", chat_id = "2" } })))
    end)

    it("answers reply dates in each endpoint's documented form", function()
        local t = open { rows_per_day = 24 }
        local q = "&date_ini=20260105000000&date_end=20260105235959"
        local status, v = ask(t, "gamification", "agents_kpi", { method = "GET", query = q })
        assert.equal(200, status)
        assert.matches("^%d%d%d%d%d%d%d%d$", v.data[1].stats[1].date)          -- YYYYmmdd
        status, v = ask(t, "reports_manager", "diagram_1_2", { method = "GET", query = q })
        assert.equal(200, status)
        assert.equal(24, #v.data)
        assert.equal("2026010500", v.data[1].date)                             -- YYYYMMDDHH
        assert.equal("2026010523", v.data[24].date)
        status, v = ask(t, "reports_manager", "cdr_1", { method = "GET", query = q })
        assert.equal("2026-01-05 00:00:00", v.data[1].date)                    -- the others
        assert.equal(200, status)
    end)

    it("answer_limit_bytes: a larger answer is a 500 (assumed), a smaller one passes", function()
        local t, srv = open { rows_per_day = 200, answer_limit_bytes = 20000 }
        local q = "&date_ini=20260105000000&date_end=20260105235959"
        local status, v = ask(t, "reports_manager", "cdr_1", { method = "GET", query = q })
        assert.equal(500, status)
        assert.equal(string.format(fake_api.MSG.answer_limit, 20000), v.msg)
        assert.equal(200, (ask(t, "information", "services", { method = "GET" })))
        assert.equal("answer_limit", srv:log()[1].refused)
        assert.equal(256 * 1024 * 1024, fake_api.DEFAULTS.answer_limit_bytes)
    end)

    it("call_limit_seconds: a call that would take longer is stopped at the limit with a 500 (assumed)", function()
        local t, srv = open { call_limit_seconds = 0.2,
            faults = { { match = "services", delay = 0.5 }, { match = "routing_points", delay = 0.1 } } }
        local status, v = ask(t, "information", "services", { method = "GET" })
        assert.equal(500, status)
        assert.equal(string.format(fake_api.MSG.call_limit, 0.2), v.msg)
        assert.equal(200, (ask(t, "information", "routing_points", { method = "GET" })))
        local log = srv:log()
        assert.equal("call_limit", log[1].refused)
        assert.is_nil(log[2].refused)
        assert.equal(60, fake_api.DEFAULTS.call_limit_seconds)
    end)

    it("send_message_mobil: one message per customer every whatsapp_interval seconds", function()
        local t = open { whatsapp_interval = 0.3 }
        local function send(tel)
            return ask(t, "whatsapp", "send_message_mobil",
                { body = { connector_id = "1", telephone = tel, message = "hola" } })
        end
        assert.equal(200, (send("573001112233")))
        local status, v = send("573001112233")
        assert.equal(400, status)
        assert.equal(string.format(rules.MSG.too_soon, 0.3), v.msg)
        assert.equal(200, (send("573009998877")))        -- another customer
        fake.clock.sleep(0.35)
        assert.equal(200, (send("573001112233")))
        assert.equal(20, fake_api.DEFAULTS.whatsapp_interval)
    end)
end)
