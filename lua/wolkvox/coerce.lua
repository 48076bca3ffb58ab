--- Opt-in value coercion: rows stay as the API sends them (every value a
-- string) unless you ask for numbers.
--
--     local coerce = require "wolkvox.coerce"
--     coerce.duration("01:02:03")   --> 3723
--     coerce.percent("9,336.00 %")  --> 9336
--     coerce.value("-")             --> nil
--     coerce.row(row)               -- a new row with every value coerced
-- @module wolkvox.coerce

local type, tonumber, pairs = type, tonumber, pairs

local M = {}

--- "HH:MM:SS" (or "H:MM:SS", hours may pass 99) to seconds; nil if `s` is
-- not a duration.
function M.duration(s)
    if type(s) ~= "string" then
        return nil
    end
    local neg, h, m, sec = s:match("^(%-?)(%d+):([0-5]%d):([0-5]%d)$")
    if not h then
        return nil
    end
    local n = tonumber(h) * 3600 + tonumber(m) * 60 + tonumber(sec)
    return neg == "-" and -n or n
end

-- A decimal number; with `commas`, thousands separators may group its
-- integer part ("9,336.00").
local function decimal(s, commas)
    if s:find("^%-?%d+%.?%d*$") then
        return tonumber(s)
    end
    if commas then
        local sign, head, rest, frac = s:match("^(%-?)(%d%d?%d?)([%d,]+)(%.?%d*)$")
        if head and rest:gsub(",%d%d%d", "") == "" then
            return tonumber(sign .. head .. rest:gsub(",", "") .. frac)
        end
    end
    return nil
end

--- "34.64 %", "34.64%" or "9,336.00 %" to a number (34.64, 9336); nil if
-- `s` is not a percentage.
function M.percent(s)
    if type(s) ~= "string" then
        return nil
    end
    local n = s:match("^%s*(.-)%s*%%%s*$")
    return n and decimal(n, true)
end

--- A numeric string to a number: integers without a leading zero (so
-- telephone numbers and codes such as "0031" stay strings) of at most 15
-- digits, and decimals; nil if `s` is not one.
function M.number(s)
    if type(s) ~= "string" then
        return nil
    end
    local int = s:match("^%-?(%d+)")
    if not int or #int > 15 or (#int > 1 and int:sub(1, 1) == "0") then
        return nil
    end
    return decimal(s)
end

--- One value: "-", "--" (and "") are nil; a duration is seconds; a
-- percentage or a numeric string a number; anything else stays as it is.
function M.value(v)
    if type(v) ~= "string" then
        return v
    end
    if v == "-" or v == "--" or v == "" then
        return nil
    end
    local n = M.duration(v) or M.percent(v) or M.number(v)
    if n ~= nil then
        return n
    end
    return v
end

--- A copy of `row` with every value coerced by `value`.
function M.row(row)
    local out = {}
    for k, v in pairs(row) do
        out[k] = M.value(v)
    end
    return out
end

return M
