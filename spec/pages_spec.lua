-- Cursors (c:pages, c:all_pages, `wolkvox call --all-pages`) against the
-- fake server: one call a page, counted by the fake's log, to the last
-- page; the max_pages guard; a cursor that repeats itself refused.
local support = require "support"
local registry = require "wolkvox.api.registry"

describe("paged lookups", function()
    local srv, c
    support.suite({ storage_files = 23, chat_messages = 25 }, { retries = 0 }, function(s, client)
        srv, c = s, client
    end)

    it("the registry says which endpoints page and how", function()
        local lf = registry.get("wolkvox_storage/list_files")
        assert.same({ "token", "page_token", "pagination.next_page_token", "items" },
            { lf.cursor, lf.cursor_param, lf.cursor_next, lf.cursor_items })
        local conv = registry.get("whatsapp/conversations_today_by_customer")
        assert.same({ "page", "pagina_mensajes", "1.paginacion_mensajes.total_paginas" },
            { conv.cursor, conv.cursor_param, conv.cursor_last })
        for _, e in ipairs(registry.endpoints) do
            if e.cursor then
                assert.equal("lookup", e.kind, e.name)
            end
        end
    end)

    it("follows list_files' page_token to the last page, one counted call a page", function()
        local seen, pages = {}, {}
        for items, meta in c:pages("list_files", { limit = 10 }) do
            pages[#pages + 1] = { meta.page, meta.cursor, meta.next, #items, meta.calls }
            for _, item in ipairs(items) do
                seen[#seen + 1] = item.file_name
            end
        end
        assert.same({ { 1, "", "p10", 10, 1 }, { 2, "p10", "p20", 10, 1 }, { 3, "p20", nil, 3, 1 } }, pages)
        assert.equal(23, #seen)
        assert.equal("file-023.wav", seen[23])
        local log = support.calls(srv, "list_files")
        assert.equal(3, #log)
        assert.is_nil(require("cjson").decode(log[1].body).page_token) -- the first page sends none
        assert.equal("p20", require("cjson").decode(log[3].body).page_token)
        assert.equal(3, c:stats().calls)
    end)

    it("all_pages merges the items of every page; a conversation pages by number", function()
        local items, meta = assert(c:all_pages("wolkvox_storage/list_files", { limit = 7 }))
        assert.equal(23, #items)
        assert.equal(4, meta.pages)
        assert.equal(4, meta.calls)
        local msgs, m2 = assert(c:all_pages("conversations_today_by_customer", { chat_id = "77" }))
        assert.equal(25, #msgs)
        assert.equal("mensaje 25", msgs[25].mensaje)
        assert.equal(3, m2.pages)
        local log = support.calls(srv, "conversations_today_by_customer")
        assert.equal(3, #log)
        assert.equal(3, require("cjson").decode(log[3].body).pagina_mensajes)
    end)

    it("stops at max_pages before spending another call, and says where to go on", function()
        local items, err = c:all_pages("list_files", { limit = 5 }, { max_pages = 2 })
        assert.is_nil(items)
        assert.equal("params", err.kind)
        assert.equal("p10", err.next)
        assert.equal(2, err.pages)
        assert.equal(10, #err.items)
        assert.matches("max_pages", err.message)
        assert.equal(2, #support.calls(srv, "list_files"))
        -- going on from err.next delivers the rest
        local rest = assert(c:all_pages("list_files", { limit = 5, page_token = err.next }))
        assert.equal(13, #rest)
        assert.equal("file-011.wav", rest[1].file_name)
        -- the iterator raises the same error after the pages it delivered
        local n = 0
        local ok, e2 = pcall(function()
            for _ in c:pages("list_files", { limit = 5 }, { max_pages = 1 }) do
                n = n + 1
            end
        end)
        assert.is_false(ok)
        assert.equal(1, n)
        assert.equal("params", e2.kind)
    end)

    it("refuses a cursor that comes back a second time instead of looping", function()
        srv:control("config", { fixtures = { { match = "list_files", status = 200, body = { code = "200",
            msg = "1 records were found", data = { items = { { name = "a" } },
                pagination = { limit = "1", next_page_token = "again" } } } } } })
        local items, err = c:all_pages("list_files", {}, { max_pages = 50 })
        assert.is_nil(items)
        assert.equal("decode", err.kind)
        assert.equal("cursor", err.reason)
        assert.is_false(err.retryable)
        assert.equal(2, #support.calls(srv, "list_files")) -- "" then "again", which answered "again"
        assert.equal(1, #err.items)
    end)

    it("refuses endpoints that do not page, and bad options, before any call", function()
        local _, err = c:all_pages("whatsapp/agent_chat", { agent_id = "1" })
        assert.equal("params", err.kind)
        assert.matches("no page parameter", err.message)
        _, err = c:all_pages("list_files", {}, { max_pages = 0 })
        assert.equal("params", err.kind)
        assert.equal(0, #srv:log())
    end)

    it("follows a cursor the caller describes for an endpoint the registry does not", function()
        local items, meta = assert(c:all_pages("list_files", { limit = 20 },
            { cursor = { type = "token", param = "page_token", next = "pagination.next_page_token",
                items = "items" } }))
        assert.equal(23, #items)
        assert.equal(2, meta.pages)
    end)
end)

describe("wolkvox call --all-pages", function()
    local srv, state
    setup(function()
        srv = support.fake { storage_files = 23 }
        state = support.tmpdir()
    end)
    teardown(function() srv:stop() end)

    local function run(args)
        local out = os.tmpname()
        local p = io.popen("env -u LD_PRELOAD WOLKVOX_TOKEN=" .. srv.token .. " lua5.4 bin/wolkvox --base-url "
            .. srv.url .. " --state-dir " .. state .. " --no-progress " .. args .. " >" .. out .. " 2>&1; echo $?")
        local code = tonumber(p:read("*a"):match("(%d+)%s*$"))
        p:close()
        local text = support.read(out)
        os.remove(out)
        return code, text
    end

    it("writes every item of every page as CSV, one call a page", function()
        srv:control("reset")
        local code, text = run("call wolkvox_storage list_files limit=10 --all-pages --format csv")
        assert.equal(0, code, text)
        local lines = {}
        for line in text:gmatch("[^\r\n]+") do
            lines[#lines + 1] = line
        end
        assert.equal("name,file_name,contentType,id,updated,isDirectory,size", lines[1])
        assert.equal(24, #lines)
        assert.equal(3, #support.calls(srv, "list_files"))
    end)

    it("exits 2 when --max-pages stops the cursor", function()
        srv:control("reset")
        local code, text = run("call wolkvox_storage list_files limit=5 --all-pages --max-pages 2 --format json")
        assert.equal(2, code)
        assert.matches("max_pages", text)
        assert.equal(2, #support.calls(srv, "list_files"))
    end)
end)
