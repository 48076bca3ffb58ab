--- Dates on the operation's wall clock.
-- wolkvox takes and returns local times of the operation ("20260131235959").
-- A "wall" value here is the number of seconds from 1970-01-01 00:00:00 *on
-- that wall clock*: plain calendar arithmetic, no time zone, no DST, so the
-- machine's TZ never changes a window.  Only `os.time()` numbers (true UTC
-- epochs) need the operation's UTC offset to become wall values.
--
-- `parse` takes dates from 2000-01-01 to 2100-12-31 only (`MIN_YEAR`,
-- `MAX_YEAR`): wolkvox holds nothing outside them, and a careless value (0,
-- 1e300, milliseconds) would otherwise plan millions of calls.
-- @module wolkvox.dates

local floor, format, tonumber, tostring, type, huge = math.floor, string.format, tonumber, tostring, type, math.huge

local M = {}

M.DAY = 86400

--- The first and the last year a date given to `parse` may fall in.
M.MIN_YEAR = 2000
M.MAX_YEAR = 2100

--- Days from 1970-01-01 to the civil date y-m-d (proleptic Gregorian).
function M.days_from_civil(y, m, d)
    y = m <= 2 and y - 1 or y
    local era = floor(y / 400)
    local yoe = y - era * 400
    local mp = (m + 9) % 12
    local doy = floor((153 * mp + 2) / 5) + d - 1
    local doe = yoe * 365 + floor(yoe / 4) - floor(yoe / 100) + doy
    return era * 146097 + doe - 719468
end

--- The civil date of a day number: y, m, d.
function M.civil_from_days(z)
    z = z + 719468
    local era = floor(z / 146097)
    local doe = z - era * 146097
    local yoe = floor((doe - floor(doe / 1460) + floor(doe / 36524) - floor(doe / 146096)) / 365)
    local y = yoe + era * 400
    local doy = doe - (365 * yoe + floor(yoe / 4) - floor(yoe / 100))
    local mp = floor((5 * doy + 2) / 153)
    local d = doy - floor((153 * mp + 2) / 5) + 1
    local m = mp < 10 and mp + 3 or mp - 9
    return m <= 2 and y + 1 or y, m, d
end

local function days_in_month(y, m)
    if m == 2 then
        local leap = (y % 4 == 0 and y % 100 ~= 0) or y % 400 == 0
        return leap and 29 or 28
    end
    return (m == 4 or m == 6 or m == 9 or m == 11) and 30 or 31
end
M.days_in_month = days_in_month

--- A wall value from its fields; nil and a message when a field is out of range.
function M.make(y, mo, d, h, mi, s)
    h, mi, s = h or 0, mi or 0, s or 0
    if not (y >= 1970 and y <= 9999 and mo >= 1 and mo <= 12 and d >= 1
            and d <= days_in_month(y, mo) and h >= 0 and h <= 23 and mi >= 0 and mi <= 59
            and s >= 0 and s <= 59) then
        return nil, format("no such date %04d-%02d-%02d %02d:%02d:%02d", y, mo, d, h, mi, s)
    end
    return M.days_from_civil(y, mo, d) * M.DAY + h * 3600 + mi * 60 + s
end

--- The fields of a wall value: y, mo, d, h, mi, s.
function M.fields(wall)
    local days = floor(wall / M.DAY)
    local rem = wall - days * M.DAY
    local y, mo, d = M.civil_from_days(days)
    return y, mo, d, floor(rem / 3600), floor(rem % 3600 / 60), rem % 60
end

--- "YYYYmmddHHiiss", the form the API takes.
function M.format(wall)
    return format("%04d%02d%02d%02d%02d%02d", M.fields(wall))
end

--- "YYYY-MM-DD HH:MM:SS", the form most reports send.
function M.iso(wall)
    return format("%04d-%02d-%02d %02d:%02d:%02d", M.fields(wall))
end

-- The range parse accepts, as wall values.
local function wall_of(y, mo, d, h, mi, s)
    return M.days_from_civil(y, mo, d) * M.DAY + h * 3600 + mi * 60 + s
end
local MIN_WALL = wall_of(M.MIN_YEAR, 1, 1, 0, 0, 0)
local MAX_WALL = wall_of(M.MAX_YEAR, 12, 31, 23, 59, 59)

local function outside(shown)
    return nil, format("date %s is outside what wolkvox holds (%d to %d)", shown, M.MIN_YEAR, M.MAX_YEAR)
end

-- A number as the caller wrote it, more or less ("0", "4102444800", "1e+300").
local function number_text(n)
    if n ~= n then
        return "nan"
    elseif n == huge or n == -huge then
        return n > 0 and "inf" or "-inf"
    elseif n == floor(n) and n > -1e15 and n < 1e15 then
        return format("%.0f", n)
    end
    return tostring(n)
end

local function whole(x)
    return x == nil or (x == floor(x) and x > -huge and x < huge)
end

-- A date number: os.time() seconds, or a refusal that says what it looks like.
local function parse_number(v, utc_offset)
    if v ~= v or v == huge or v == -huge then
        return nil, "a date number must be finite seconds since 1970 (os.time()), not " .. number_text(v)
    end
    if v ~= floor(v) then
        return nil, "a date number must be whole seconds (os.time())"
    end
    local wall = v + (utc_offset or 0)
    if wall >= MIN_WALL and wall <= MAX_WALL then
        return wall
    end
    local ms = floor(v / 1000) + (utc_offset or 0)
    if ms >= MIN_WALL and ms <= MAX_WALL then
        return nil, format("date %s looks like milliseconds (os.time() counts seconds: divide it by 1000)",
            number_text(v))
    end
    if wall > -1e11 and wall < 1e11 then
        return outside(format("%s (%s)", number_text(v), M.iso(wall)))
    end
    return outside(number_text(v))
end

--- The relative dates `parse` reads on the operation's clock.
M.RELATIVE = "now, today, yesterday, -Nd (N days ago), this-week, last-week, this-month, last-month, "
    .. "this-year, last-year"

-- The first and last day of the calendar period `unit` that holds `day`
-- (a day number), `back` periods earlier.
local function period_of(unit, day, back)
    if unit == "week" then
        -- Days since Monday: day 0 (1970-01-01) was a Thursday.
        local monday = day - (day + 3) % 7 - 7 * back
        return monday, monday + 6
    end
    local y, mo = M.fields(day * M.DAY)
    if unit == "year" then
        y = y - back
        return M.days_from_civil(y, 1, 1), M.days_from_civil(y, 12, 31)
    end
    mo = mo - back
    while mo < 1 do
        mo, y = mo + 12, y - 1
    end
    local first = M.days_from_civil(y, mo, 1)
    local ny, nmo = y, mo + 1
    if nmo > 12 then
        ny, nmo = y + 1, 1
    end
    return first, M.days_from_civil(ny, nmo, 1) - 1
end

--- A relative date (`RELATIVE`) as a wall value, given `now` (a wall
-- value on the operation's clock): a day's or a period's first second, or
-- its last with `is_end` ("last-month" as an end is the month's last
-- second).  nil when `v` is not one.
function M.relative(v, is_end, now)
    if type(v) ~= "string" then
        return nil
    end
    if v == "now" then
        return now
    end
    local today = floor(now / M.DAY)
    local day
    if v == "today" then
        day = today
    elseif v == "yesterday" then
        day = today - 1
    else
        local n = v:match("^%-(%d%d?%d?%d?)d$")
        if n then
            day = today - tonumber(n)
        else
            local which, unit = v:match("^(%a+)%-(%a+)$")
            local back = ({ this = 0, last = 1 })[which]
            if not back or not (unit == "week" or unit == "month" or unit == "year") then
                return nil
            end
            local first, last = period_of(unit, today, back)
            return is_end and (last * M.DAY + M.DAY - 1) or first * M.DAY
        end
    end
    return is_end and (day * M.DAY + M.DAY - 1) or day * M.DAY
end

--- Parse a date the caller gave.
-- Accepts "YYYYmmddHHiiss", "YYYYmmdd", "YYYY-MM-DD", "YYYY-MM-DD HH:MM",
-- "YYYY-MM-DD HH:MM:SS" (also with "T"), `os.time()` numbers (converted with
-- `utc_offset`, seconds east of UTC) and tables `{year, month, day, hour,
-- min, sec}` read as wall-clock fields.  When `is_end` and the value has no
-- time of day, it means the last second of that day.  Dates before
-- `MIN_YEAR` or after `MAX_YEAR`, numbers that are not finite, and numbers
-- that look like milliseconds are refused.  Relative dates (`RELATIVE`:
-- "yesterday", "last-month", "-7d"...) are read on the operation's clock
-- (`utc_offset`), never the machine's.
-- @return wall value, or nil and a message
function M.parse(v, is_end, utc_offset)
    local t = type(v)
    local y, mo, d, h, mi, s, has_time
    local shown -- the date as the caller gave it, for messages
    if t == "number" then
        return parse_number(v, utc_offset)
    elseif t == "table" then
        y, mo, d = tonumber(v.year), tonumber(v.month), tonumber(v.day)
        if not (y and mo and d) then
            return nil, "a date table needs year, month and day"
        end
        h, mi, s = tonumber(v.hour), tonumber(v.min), tonumber(v.sec)
        has_time = h ~= nil
        if whole(y) and whole(mo) and whole(d) and y > -1e9 and y < 1e9 and mo > -100 and mo < 100
                and d > -100 and d < 100 then
            shown = format("%04d-%02d-%02d", y, mo, d)
        else
            shown = number_text(y) .. "-" .. number_text(mo) .. "-" .. number_text(d)
        end
    elseif t == "string" and M.relative(v, is_end, M.now(utc_offset)) then
        return M.relative(v, is_end, M.now(utc_offset))
    elseif t == "string" then
        local a, b, c, e, f, g = v:match("^(%d%d%d%d)(%d%d)(%d%d)(%d%d)(%d%d)(%d%d)$")
        if a then
            y, mo, d, h, mi, s, has_time = a, b, c, e, f, g, true
        else
            a, b, c = v:match("^(%d%d%d%d)(%d%d)(%d%d)$")
            if not a then
                a, b, c = v:match("^(%d%d%d%d)%-(%d%d?)%-(%d%d?)$")
            end
            if a then
                y, mo, d = a, b, c
            else
                a, b, c, e, f, g = v:match("^(%d%d%d%d)%-(%d%d?)%-(%d%d?)[T ](%d%d?):(%d%d):?(%d?%d?)$")
                if not a then
                    return nil, "unrecognised date '" .. v .. "' (use YYYY-MM-DD[ HH:MM[:SS]], YYYYmmddHHiiss, "
                        .. "or one of " .. M.RELATIVE .. ")"
                end
                y, mo, d, h, mi, s, has_time = a, b, c, e, f, g ~= "" and g or "0", true
            end
        end
        y, mo, d = tonumber(y), tonumber(mo), tonumber(d)
        h, mi, s = tonumber(h), tonumber(mi), tonumber(s)
        shown = v
    else
        return nil, "a date must be a string, a number or a table (got " .. t .. ")"
    end
    if not has_time then
        if is_end then
            h, mi, s = 23, 59, 59
        else
            h, mi, s = 0, 0, 0
        end
    end
    if not (whole(y) and whole(mo) and whole(d) and whole(h) and whole(mi) and whole(s)) then
        return nil, "date fields must be whole numbers"
    end
    if y < M.MIN_YEAR or y > M.MAX_YEAR then
        return outside(shown)
    end
    return M.make(y, mo, d, h, mi, s)
end

--- The wall value now, for an operation `utc_offset` seconds east of UTC.
function M.now(utc_offset)
    return os.time() + (utc_offset or 0)
end

return M
