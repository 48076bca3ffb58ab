-- wolkvox.coerce: opt-in value coercion (the CLI's --typed).
local coerce = require "wolkvox.coerce"

describe("wolkvox.coerce", function()
    it("turns HH:MM:SS durations into seconds", function()
        assert.equal(3723, coerce.duration("01:02:03"))
        assert.equal(360000, coerce.duration("100:00:00"))
        assert.is_nil(coerce.duration("01:62:03"))
        assert.is_nil(coerce.duration("2026-01-01 10:00:00"))
    end)

    it("turns percentages into numbers, with thousands separators", function()
        assert.equal(34.64, coerce.percent("34.64 %"))
        assert.equal(9336, coerce.percent("9,336.00 %"))
        assert.equal(12, coerce.percent("12%"))
        assert.is_nil(coerce.percent("9,33,6.00 %"))
        assert.is_nil(coerce.percent("34.64"))
    end)

    it("turns numeric strings into numbers, keeping codes and phone numbers with a leading zero", function()
        assert.equal(12, coerce.number("12"))
        assert.equal(-3.5, coerce.number("-3.5"))
        assert.equal(0, coerce.number("0"))
        assert.is_nil(coerce.number("0031"))
        assert.is_nil(coerce.number("1234567890123456"))
        assert.is_nil(coerce.number("1,234"))
    end)

    it("reads - and -- as nothing and leaves other text alone", function()
        assert.is_nil(coerce.value("-"))
        assert.is_nil(coerce.value("--"))
        assert.equal("agent 1", coerce.value("agent 1"))
        assert.equal(5, coerce.value(5))
        local row = { calls = "12", aht = "00:01:00", occupancy = "8.01 %", skill = "-", name = "x" }
        assert.same({ calls = 12, aht = 60, occupancy = 8.01, name = "x" }, coerce.row(row))
        assert.equal("12", row.calls) -- the row itself is left as it was
    end)
end)
