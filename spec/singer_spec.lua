-- The singer format (issue #22): Singer messages, one JSON object a line —
-- SCHEMA, a RECORD per row with typed values, STATE last — and a sync's
-- state given back as a Singer state (as Meltano passes a tap its last one).
local core = require "wolkvox.core"
local formats = require "wolkvox.out.formats"
local json = require "wolkvox.json"
local support = require "support"

-- Each line of `text` decoded (every line must be one JSON object).
local function messages(text)
    local out = {}
    for line in text:gmatch("([^\n]*)\n") do
        local ok, m = pcall(core.decode, line)
        assert(ok and type(m) == "table", "not a JSON object: " .. line)
        out[#out + 1] = m
    end
    assert.equal("\n", text:sub(-1))
    return out
end

local function of_type(list, ty)
    local out = {}
    for _, m in ipairs(list) do
        if m.type == ty then
            out[#out + 1] = m
        end
    end
    return out
end

-- Whether JSON value `v` (decoded) is of JSON Schema type `ty`.
local function is(ty, v)
    if v == core.null then
        return ty == "null"
    elseif ty == "integer" then
        return type(v) == "number" and v == math.floor(v)
    elseif ty == "number" then
        return type(v) == "number"
    elseif ty == "string" then
        return type(v) == "string"
    elseif ty == "boolean" then
        return type(v) == "boolean"
    elseif ty == "object" then
        return type(v) == "table" and v[1] == nil
    elseif ty == "array" then
        return type(v) == "table"
    end
    return false
end

-- Check that `record` fits `schema`: each property's value is of one of
-- the types it declares; a declared date-time is RFC 3339 with an offset.
local function validate(schema, record)
    for name, v in pairs(record) do
        local p = schema.properties[name]
        if p and p.type then
            local types = type(p.type) == "table" and p.type or { p.type }
            local fits = false
            for _, ty in ipairs(types) do
                fits = fits or is(ty, v)
            end
            assert(fits, ("property %s: %s does not fit %s"):format(name, tostring(v), table.concat(types, "|")))
            if p.format == "date-time" and type(v) == "string" then
                assert.matches("^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%d[%+%-]%d%d:%d%d$", v)
            end
        else
            assert.is_true(schema.additionalProperties, "property " .. name .. " is not in the schema")
        end
    end
end

-- Rows written through a singer writer of `opts` to a file: its messages.
local function write(rows, opts)
    local path = os.tmpname()
    local f = assert(io.open(path, "wb"))
    local w = assert(formats.writer("singer", f, opts))
    for _, r in ipairs(rows) do
        assert(w:write(r))
    end
    assert(w:close())
    f:close()
    local text = support.read(path)
    os.remove(path)
    return messages(text), text
end

describe("the singer format", function()
    local srv, c, dir
    support.suite({ rows_per_day = 24 }, {}, function(s, x) srv, c = s, x end)
    setup(function() dir = support.tmpdir() end)
    teardown(function() os.execute("rm -rf '" .. dir .. "'") end)

    local n = 0
    local function path(ext)
        n = n + 1
        return dir .. "/f" .. n .. (ext or "")
    end

    -- Whether the jobs tell a writer its endpoint (the hook in
    -- wolkvox.out.sinks and the jobs): else these cases are pending.
    local function hooked()
        local out = path(".singer")
        local ok, err = c:export("cdr_1", { from = "2026-01-01", to = "2026-01-01" }, { format = "singer",
            output = out })
        if not ok and tostring(err and err.message):find("endpoint is not known", 1, true) then
            pending("the jobs do not pass the endpoint to a writer yet (sinks hook): " .. err.message)
            return false
        end
        assert(ok, tostring(err))
        return true
    end

    it("writes SCHEMA, a typed RECORD per row and STATE last", function()
        local rows = assert(c:report("cdr_1", { from = "2026-01-05", to = "2026-01-06" }))
        assert.is_true(#rows > 10)
        local list = write(rows, { endpoint = "cdr_1" })
        local schema = list[1]
        assert.equal("SCHEMA", schema.type)
        assert.equal("cdr_1", schema.stream)
        assert.same({ "conn_id" }, schema.key_properties)
        assert.same({ "date" }, schema.bookmark_properties)
        assert.equal("object", schema.schema.type)
        assert.same({ "integer", "null" }, schema.schema.properties.time_seg.type)
        assert.same({ "object", "null" }, schema.schema.properties._unfit.type)
        local records = of_type(list, "RECORD")
        assert.equal(#rows, #records)
        assert.equal(#rows + 2, #list)
        for i, m in ipairs(records) do
            assert.equal("cdr_1", m.stream)
            local r, raw = m.record, rows[i]
            assert.equal(raw.conn_id, r.conn_id)
            assert.equal(tonumber(raw.time_seg), r.time_seg)
            assert.equal(math.floor(r.time_seg), r.time_seg) -- whole seconds (LuaJIT has no math.type)
            assert.equal("number", type(r.cost))
            assert.equal(tonumber(raw.cost), r.cost)
            assert.equal(raw.date:gsub(" ", "T") .. "-05:00", r.date)
            assert.is_nil(r._unfit)
            validate(schema.schema, r)
        end
        local state = list[#list]
        assert.equal("STATE", state.type)
        -- An export's bookmark: the span of the rows' dates written.
        local b = state.value.bookmarks.cdr_1
        assert.equal(rows[#rows].date, b.watermark)
        assert.equal(rows[1].date, b.since)
        assert.equal("date", b.replication_key)
        assert.equal(rows[#rows].date:gsub(" ", "T") .. "-05:00", b.replication_key_value)
    end)

    it("keeps a value that does not fit its type, as sent, in _unfit (the record still fits)", function()
        local rows = assert(c:report("cdr_1", { from = "2026-01-05", to = "2026-01-05" }))
        local row = rows[1]
        row.cost, row.time_seg, row.date, row.comment = "n/a", "12:xx", "yesterday-ish", "-"
        local list, text = write({ row }, { endpoint = "reports_manager/cdr_1" })
        local r = of_type(list, "RECORD")[1].record
        assert.same({ cost = "n/a", time_seg = "12:xx", date = "yesterday-ish" }, r._unfit)
        for _, k in ipairs { "cost", "time_seg", "date", "comment" } do -- no value ("-"): null, not unfit
            assert.matches('"' .. k .. '":null', text, 1, true)
        end
        validate(list[1].schema, r)
    end)

    it("writes timestamps on the clock it is given, durations as seconds", function()
        local row = { conn_id = "1", date = "2026-01-05 10:00:00", time_seg = "01:02:03" }
        local r = of_type(write({ row }, { endpoint = "cdr_1", utc_offset = 3600 }), "RECORD")[1].record
        assert.equal("2026-01-05T10:00:00+01:00", r.date)
        assert.equal(3723, r.time_seg)
        r = of_type(write({ row }, { endpoint = "cdr_1" }), "RECORD")[1].record
        assert.equal("2026-01-05T10:00:00-05:00", r.date) -- wolkvox.defaults' offset
    end)

    it("gives an aggregate no key_properties and the sync's bookmark when given", function()
        local rows = assert(c:report("agent_1", { from = "2026-01-05", to = "2026-01-05" }))
        local bm = { since = "2026-01-01 00:00:00", watermark = "2026-01-05 23:59:59" }
        local list = write(rows, { endpoint = "agent_1", bookmark = function() return bm end })
        assert.equal("SCHEMA", list[1].type)
        assert.equal("agent_1", list[1].stream)
        assert.same({}, list[1].key_properties)
        assert.is_nil(list[1].bookmark_properties)
        for _, m in ipairs(of_type(list, "RECORD")) do
            assert.equal(math.floor(m.record.calls), m.record.calls)
            assert.equal("number", type(m.record.occupancy))
            validate(list[1].schema, m.record)
        end
        assert.same({ type = "STATE", value = { bookmarks = { agent_1 = bm } } }, list[#list])
    end)

    it("writes SCHEMA and STATE with no row; without an endpoint it refuses", function()
        local list, text = write({}, { endpoint = "cdr_1" })
        assert.equal(2, #list)
        assert.equal("SCHEMA", list[1].type)
        assert.same({ type = "STATE", value = { bookmarks = { cdr_1 = {} } } }, list[2])
        assert.matches('^{"bookmark_properties":%["date"%],"key_properties":%["conn_id"%],', text)
        local f = assert(io.open(path(), "wb"))
        local w = assert(formats.writer("singer", f, {}))
        local ok, why = w:write({ conn_id = "1" })
        assert.is_nil(ok)
        assert.matches("endpoint is not known", why, 1, true)
        assert.is_nil((w:close()))
        f:close()
    end)

    it("is not resumable: no checkpoint, no append", function()
        local _, err = c:export("cdr_1", { from = "2026-01-01", to = "2026-01-02" }, { format = "singer",
            output = path(), checkpoint = path() })
        assert.equal("params", err.kind)
        assert.matches("csv, ndjson and json formats only", err.message, 1, true)
        _, err = c:sync("cdr_1", { state = path(), since = "2026-01-01" }, { format = "singer", output = path(),
            append = true })
        assert.equal("params", err.kind)
        assert.matches("append works with csv and ndjson", err.message, 1, true)
    end)

    describe("a Singer state given as a sync's state", function()
        -- A first sync over 2026-01-01 .. 2026-01-10 (rows in a list) and
        -- the Singer STATE its writer gives: the state's own since/watermark.
        local function first(st)
            local a, ma = c:sync("cdr_1", { state = st, since = "2026-01-01", ["until"] = "2026-01-10" })
            assert.is_truthy(a, tostring(ma))
            local saved = core.decode(support.read(st))
            local list = write(a, { endpoint = "cdr_1", bookmark = { since = saved.since,
                watermark = saved.watermark } })
            return a, ma, list[#list]
        end

        it("goes on from the bookmark (a STATE message, or its value)", function()
            local a, ma, state = first(path())
            assert.equal("2026-01-10 23:59:59", ma.watermark)
            assert.equal("2026-01-10 23:59:59", state.value.bookmarks.cdr_1.watermark)
            for _, form in ipairs { "message", "value" } do
                local st = path(".json")
                support.spit(st, json.encode(form == "message" and state or state.value), "\n")
                local b, mb = c:sync("cdr_1", { state = st, ["until"] = "2026-01-20" })
                assert.is_truthy(b, tostring(mb))
                assert.equal("2026-01-10 23:00:00", mb.from) -- the watermark, less the overlap
                assert.equal("2026-01-20 23:59:59", mb.watermark)
                -- The rows of both runs are the report's; the overlap's,
                -- whose keys a Singer state does not hold, come again.
                local want = assert(c:report("cdr_1", { from = "2026-01-01", to = "2026-01-20" }))
                local seen, twice = {}, 0
                for _, r in ipairs(a) do
                    seen[r.conn_id] = true
                end
                for _, r in ipairs(b) do
                    if seen[r.conn_id] then
                        twice = twice + 1
                        assert.is_true(r.date >= "2026-01-10 23:00:00", r.date)
                    end
                    seen[r.conn_id] = true
                end
                assert.equal(#want, #a + #b - twice)
                for _, r in ipairs(want) do
                    assert.is_true(seen[r.conn_id], r.conn_id)
                end
                -- From then on the file is this sync's own state.
                local own = core.decode(support.read(st))
                assert.equal(1, own.version)
                assert.equal("2026-01-01 00:00:00", own.since)
                local _, mc = c:sync("cdr_1", { state = st, ["until"] = "2026-01-22", force = true })
                assert.equal("2026-01-20 23:00:00", mc.from)
                assert.is_true(mc.dropped > 0)
            end
        end)

        it("appending, the state written over it is this sync's own", function()
            local _, _, state = first(path())
            local st, out = path(".json"), path(".csv")
            support.spit(st, json.encode(state))
            local b, mb = c:sync("cdr_1", { state = st, ["until"] = "2026-01-12" }, { output = out, append = true })
            assert.is_truthy(b, tostring(mb))
            assert.equal("2026-01-10 23:00:00", mb.from)
            local own = core.decode(support.read(st))
            assert.equal(1, own.version)
            assert.equal("string", type(own.sync))
            local c2, mc = c:sync("cdr_1", { state = st, ["until"] = "2026-01-14", force = true },
                { output = out, append = true })
            assert.is_truthy(c2, tostring(mc))
            assert.equal("2026-01-12 23:00:00", mc.from)
        end)

        it("refuses a Singer state with no bookmark for this stream, spending nothing", function()
            local _, _, state = first(path())
            srv:control("reset")
            local cases = {
                { { type = "STATE", value = { bookmarks = { agent_1 = { watermark = "2026-01-01 00:00:00" } } } },
                    "holds no bookmark for stream cdr_1 (its bookmarks: agent_1)" },
                { { bookmarks = {} }, "holds no bookmark for stream cdr_1 (its bookmarks: none)" },
                { { bookmarks = { cdr_1 = {} } }, "holds no watermark for stream cdr_1" },
                { { bookmarks = { cdr_1 = { watermark = "soon" } } }, "has a field 'watermark'" },
                { { type = "RECORD", stream = "cdr_1", record = {} }, "a Singer RECORD message, not a STATE" },
            }
            for _, case in ipairs(cases) do
                local st = path(".json")
                support.spit(st, json.encode(case[1]))
                local rows, err = c:sync("cdr_1", { state = st, ["until"] = "2026-01-20" })
                assert.is_nil(rows, case[2])
                assert.equal("params", err.kind)
                assert.matches(case[2], err.message, 1, true)
            end
            -- A bookmark without since: the overlap is still read.
            local st = path(".json")
            local watermark = state.value.bookmarks.cdr_1.watermark
            support.spit(st, json.encode { bookmarks = { cdr_1 = { watermark = watermark } } })
            local _, mb = c:sync("cdr_1", { state = st, ["until"] = "2026-01-12" })
            assert.equal("2026-01-10 23:00:00", mb.from)
            assert.equal(1, srv:control("stats").requests)
        end)
    end)

    describe("through the jobs", function()
        it("c:export writes Singer to a file", function()
            if not hooked() then
                return
            end
            local out = path(".singer")
            local count = assert(c:export("cdr_1", { from = "2026-01-05", to = "2026-01-06" }, { format = "singer",
                output = out }))
            local list = messages(support.read(out))
            assert.equal("SCHEMA", list[1].type)
            assert.same({ "conn_id" }, list[1].key_properties)
            assert.equal(count, #of_type(list, "RECORD"))
            for _, m in ipairs(of_type(list, "RECORD")) do
                validate(list[1].schema, m.record)
                assert.matches("T%d%d:%d%d:%d%d%-05:00$", m.record.date)
            end
            assert.equal("STATE", list[#list].type)
            local m, err = c:export("agent_1", { from = "2026-01-05", to = "2026-01-06", per = "day" },
                { format = "singer", output = out })
            assert.is_truthy(m, tostring(err))
            list = messages(support.read(out))
            assert.same({}, list[1].key_properties)
            assert.equal(m, #of_type(list, "RECORD"))
        end)

        it("c:sync writes Singer; its STATE's value given back goes on from the bookmark", function()
            if not hooked() then
                return
            end
            local st, out = path(), path(".singer")
            local a = assert(c:sync("cdr_1", { state = st, since = "2026-01-01", ["until"] = "2026-01-10" },
                { format = "singer", output = out }))
            local list = messages(support.read(out))
            assert.equal(a, #of_type(list, "RECORD"))
            local state = list[#list]
            assert.equal("STATE", state.type)
            assert.same({ since = "2026-01-01 00:00:00", watermark = "2026-01-10 23:59:59" },
                state.value.bookmarks.cdr_1)
            local given = path(".json")
            support.spit(given, json.encode(state.value))
            local b, mb = c:sync("cdr_1", { state = given, ["until"] = "2026-01-20" }, { format = "singer",
                output = out })
            assert.is_truthy(b, tostring(mb))
            assert.equal("2026-01-10 23:00:00", mb.from)
            list = messages(support.read(out))
            assert.equal(b, #of_type(list, "RECORD"))
            assert.same({ since = "2026-01-01 00:00:00", watermark = "2026-01-20 23:59:59" },
                list[#list].value.bookmarks.cdr_1)
        end)

        it("wolkvox report --format singer", function()
            if not hooked() then
                return
            end
            local home = path()
            os.execute("mkdir -p '" .. home .. "'")
            local out, err = path(".out"), path(".err")
            local cmd = ("env -u LD_PRELOAD -u WOLKVOX_CONFIG -u WOLKVOX_PROFILE -u WOLKVOX_SERVER HOME=%s "
                .. "XDG_CONFIG_HOME=%s/.config XDG_CACHE_HOME=%s/.cache WOLKVOX_TOKEN=%s lua5.4 bin/wolkvox "
                .. "--base-url %s --state-dir %s report cdr_1 --from 2026-01-01 --to 2026-01-02 --format singer "
                .. "--no-progress >%s 2>%s"):format(support.q(home), support.q(home), support.q(home),
                support.q(srv.token), support.q(srv.url), support.q(home), support.q(out), support.q(err))
            local ok = os.execute(cmd)
            assert(ok, support.slurp(err))
            local list = messages(support.read(out))
            assert.equal("SCHEMA", list[1].type)
            assert.equal("cdr_1", list[1].stream)
            assert.same({ "conn_id" }, list[1].key_properties)
            assert.equal(48, #of_type(list, "RECORD"))
            for _, m in ipairs(of_type(list, "RECORD")) do
                validate(list[1].schema, m.record)
            end
            assert.equal("STATE", list[#list].type)
        end)
    end)
end)
