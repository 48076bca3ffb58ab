-- wolkvox.dates and the calendar arithmetic of wolkvox.call.windows: cases
-- a planted-bug check found without a spec (issue #21).
local dates = require "wolkvox.dates"
local windows = require "wolkvox.call.windows"

describe("dates", function()
    it("29 February exists in leap years only (2028, 2000), not in 2027 or 2100", function()
        assert.equal("2028-02-29 00:00:00", dates.iso(assert(dates.parse("2028-02-29"))))
        assert.equal("2000-02-29 23:59:59", dates.iso(assert(dates.parse("2000-02-29", true))))
        for _, d in ipairs { "2027-02-29", "2100-02-29", "2026-02-30", "2026-13-01", "2026-04-31" } do
            local v, why = dates.parse(d)
            assert.is_nil(v, d)
            assert.is_string(why, d)
        end
    end)
end)

describe("calendar periods", function()
    local function labels(from, to, per)
        local out = {}
        for _, p in ipairs(windows.periods(assert(dates.parse(from)), assert(dates.parse(to, true)), per)) do
            out[#out + 1] = p.label .. " " .. dates.iso(p.from) .. " .. " .. dates.iso(p.to)
        end
        return out
    end

    it("months cross November into December, and December into January", function()
        assert.same({
            "2026-11 2026-11-15 00:00:00 .. 2026-11-30 23:59:59",
            "2026-12 2026-12-01 00:00:00 .. 2026-12-31 23:59:59",
            "2027-01 2027-01-01 00:00:00 .. 2027-01-10 23:59:59",
        }, labels("2026-11-15", "2027-01-10", "month"))
    end)

    it("February has 29 days in a leap year and 28 otherwise", function()
        for _, case in ipairs { { "2028", "29" }, { "2027", "28" }, { "2100", "28" } } do
            local y, last = case[1], case[2]
            assert.same({ y .. "-02 " .. y .. "-02-01 00:00:00 .. " .. y .. "-02-" .. last .. " 23:59:59" },
                labels(y .. "-02-01", y .. "-02-" .. last, "month"))
        end
    end)

    it("weeks start on Monday, across a year's end", function()
        assert.same({
            "week of 2026-12-28 2026-12-30 00:00:00 .. 2027-01-03 23:59:59",
            "week of 2027-01-04 2027-01-04 00:00:00 .. 2027-01-05 23:59:59",
        }, labels("2026-12-30", "2027-01-05", "week"))
    end)
end)
