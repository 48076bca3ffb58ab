--- The command line's own words for the library's messages: an error or a
-- warning that names a Lua option (`per = "month"`, `force = true`,
-- `c:rec_screen()`) is said with the option a shell user types (`--per
-- month`, `--force`, `wolkvox call billing rec_screen`).  One place, so
-- the library keeps speaking Lua to scripts.
-- @module wolkvox.cli.words

local registry = require "wolkvox.api.registry"

local M = {}

-- Pattern, replacement (a string or a function), in order.
M.RULES = {
    { 'pass per = "day" | "week" | "month"', "give --per day, week or month" },
    { '%(per = "day"%)', "(--per day)" },
    { 'per must be "day"', "--per must be day" },
    { "call c:([%w_]+)%(%) instead", function(api)
        local e = registry.bare(api)
        return e and ("run wolkvox call " .. e.family .. " " .. api .. " instead")
            or ("run wolkvox call FAMILY " .. api .. " instead")
    end },
    { "%(force to sync anyway%)", "(--force to sync anyway)" },
    { "force = true", "--force" },
    { "allow it with max_calls = (%d+) %(in the call's parameters or in wolkvox%.new%)",
        "allow it with --max-calls %1 (or --yes)" },
    { "the ceiling of (%d+) %(max_calls%)", "the ceiling of %1 (--max-calls; by default 5 %% of the day's limit, "
        .. "or 50 calls while it is unknown)" },
    { "the first sync needs since = DATE", "the first sync needs --since DATE" },
    { "state = PATH is needed", "--state FILE is needed" },
    { "give since %(the first sync's start%) and until, not from/to", "give --since and --until, not from/to" },
    { "the checkpoint and the output must be different files", "--checkpoint and --output must be different files" },
    { "a checkpoint needs output = PATH", "--checkpoint needs --output FILE" },
    { "%f[%w]lag must be", "--lag must be" },
    { "%f[%w]overlap must be", "--overlap must be" },
}

--- "1 row", "2 rows": `n` and the `noun` in the right number.
function M.count(n, noun)
    return string.format("%d %s%s", n, noun, n == 1 and "" or "s")
end

--- `text` (a message of the library) in the command line's words.
function M.say(text)
    text = tostring(text)
    for _, r in ipairs(M.RULES) do
        text = text:gsub(r[1], r[2])
    end
    return text
end

return M
