-- The library's on_progress hook (what the CLI's progress bar is drawn from).
local support = require "support"

describe("on_progress", function()
    local srv
    setup(function() srv = support.fake { rows_per_day = 10 } end)
    teardown(function() srv:stop() end)
    before_each(function() srv:control("reset") end)

    it("is called after each window with done, total, rows, calls and elapsed", function()
        local seen = {}
        local c = support.client(srv, { on_progress = function(p) seen[#seen + 1] = p end })
        local rows = 0
        for _ in c:each("cdr_1", { from = "2026-01-01", to = "2026-03-31" }) do
            rows = rows + 1
        end
        c:close()
        assert.equal(3, #seen)
        for i, p in ipairs(seen) do
            assert.equal("reports_manager/cdr_1", p.endpoint)
            assert.equal(i, p.done)
            assert.equal(3, p.total)
            assert.is_number(p.elapsed)
        end
        assert.equal(rows, seen[3].rows)
        assert.equal(3, seen[3].calls)
    end)

    it("counts the windows a truncated answer adds to the total", function()
        srv:control("config", { max_rows = 200 })
        local seen = {}
        local c = support.client(srv, { on_progress = function(p) seen[#seen + 1] = p end })
        local rows, meta = c:report("cdr_1", { from = "2026-01-01", to = "2026-02-28", max_rows = 200 })
        c:close()
        assert.truthy(rows, tostring(meta))
        local last = seen[#seen]
        assert.equal(last.total, last.done)
        assert.equal(#meta.windows, last.done)
        assert.equal(#rows, last.rows)
    end)

    it("is checked as a function option", function()
        assert.has_error(function() support.client(srv, { on_progress = 1 }) end)
    end)

    it("is also a parameter of one call, beside the client's", function()
        local mine, clients = {}, {}
        local c = support.client(srv, { on_progress = function(p) clients[#clients + 1] = p end })
        assert(c:report("cdr_1", { from = "2026-01-01", to = "2026-02-28",
            on_progress = function(p) mine[#mine + 1] = p.done end }))
        local _, err = c:report("cdr_1", { from = "2026-01-01", to = "2026-01-02", on_progress = 1 })
        c:close()
        assert.same({ 1, 2 }, mine)
        assert.equal(2, #clients)
        assert.equal("params", err.kind)
    end)
end)
