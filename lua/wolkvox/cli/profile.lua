--- Profiles: the INI file of `wolkvox` settings (like ~/.aws/config), read
-- as data (no code runs).
--
--     [default]
--     server = 0031
--     token_file = ~/.config/wolkvox/0031.token
--
--     [profile acme]
--     base_url = https://wv0042.wolkvox.com
--     licenses = 5
--
-- Keys are options of `wolkvox.new`; numbers and booleans are converted, a
-- leading `~/` of a path is the home directory.
-- @module wolkvox.cli.profile

local options = require "wolkvox.options"
local registry = require "wolkvox.api.registry"

local getenv, tonumber, format = os.getenv, tonumber, string.format

local M = {}

-- Options that are paths (a leading ~/ expands).
local PATHS = { token_file = true, state_dir = true, cainfo = true, capath = true, redis_cafile = true,
    redis_cert = true, redis_key = true }

--- The config file to read: `$WOLKVOX_CONFIG`, else
-- `$XDG_CONFIG_HOME/wolkvox/config`, else `~/.config/wolkvox/config`.
-- @treturn string the path
-- @treturn boolean whether it was named explicitly (a missing one is then an error)
function M.path()
    local p = getenv("WOLKVOX_CONFIG")
    if p and p ~= "" then
        return p, true
    end
    local xdg = getenv("XDG_CONFIG_HOME")
    if xdg and xdg ~= "" then
        return xdg .. "/wolkvox/config", false
    end
    return (getenv("HOME") or "") .. "/.config/wolkvox/config", false
end

--- `~/x` -> `$HOME/x`.
function M.expand(p)
    if p:sub(1, 2) == "~/" or p == "~" then
        return (getenv("HOME") or "") .. p:sub(2)
    end
    return p
end

-- The value of `key` converted to the option's type; nil and a message if
-- it cannot be.
local function convert(key, v)
    local t = options.types[key]
    if type(t) == "table" then
        if t.number and tonumber(v) then
            return tonumber(v)
        elseif t.boolean and (v == "false" or v == "true") then
            return v == "true"
        elseif t.string then
            return PATHS[key] and M.expand(v) or v
        end
        return nil, "cannot be '" .. v .. "'"
    elseif t == "number" then
        local n = tonumber(v)
        if not n then
            return nil, "must be a number (got '" .. v .. "')"
        end
        return n
    elseif t == "boolean" then
        if v ~= "true" and v ~= "false" then
            return nil, "must be true or false (got '" .. v .. "')"
        end
        return v == "true"
    elseif t == "string" then
        return PATHS[key] and M.expand(v) or v
    end
    return nil, "is not an option a config file can set"
end

--- Parse the text of a config file.
-- @tparam string text the file's contents
-- @tparam[opt] string name the file's name, for messages
-- @return a table profile name -> options (`default` for `[default]`,
--   `acme` for `[profile acme]`), and the mistakes found, each naming its
--   line: `{ profile = NAME or nil (outside any profile), message = ... }`
--   (a line with a mistake is left out; the rest is read)
function M.parse(text, name)
    name = name or "config"
    local out, cur, curname, problems = {}, nil, nil, {}
    local n = 0
    local function problem(msg)
        problems[#problems + 1] = { profile = curname, message = format("%s:%d: %s", name, n, msg) }
    end
    for line in (text .. "\n"):gmatch("([^\n]*)\n") do
        n = n + 1
        line = line:gsub("\r$", ""):match("^%s*(.-)%s*$")
        if line == "" or line:find("^[#;]") then -- luacheck: ignore 542
        elseif line:find("^%[") then
            local sect = line:match("^%[%s*(.-)%s*%]$")
            local prof = sect and (sect == "default" and "default" or sect:match("^profile%s+(%S+)$"))
            if not prof then
                cur, curname = nil, nil
                problem("a section is [default] or [profile NAME]")
            else
                out[prof] = out[prof] or {}
                cur, curname = out[prof], prof
            end
        else
            local k, v = line:match("^([%w_]+)%s*=%s*(.-)$")
            if not k then
                problem("expected key = value")
            elseif not cur then
                problem(k .. " is outside a section")
            else
                local q = v:match('^"(.*)"$') or v:match("^'(.*)'$")
                v = q or v
                if options.types[k] == nil then
                    problem("unknown option '" .. k .. "'" .. registry.suggest(k, options.types))
                else
                    local val, err = convert(k, v)
                    if val == nil then
                        problem(k .. " " .. err)
                    else
                        cur[k] = val
                    end
                end
            end
        end
    end
    return out, problems
end

--- Read the options of one profile.
-- @tparam[opt] string path the config file (nil: `M.path()`)
-- @tparam[opt] string profile the profile (nil: `$WOLKVOX_PROFILE`, else "default")
-- @treturn table the options (empty when there is no file and nothing was named), or nil and a message
-- @treturn table warnings (strings), e.g. a file others can read
function M.load(path, profile)
    local explicit = path ~= nil
    if not path then
        path, explicit = M.path()
    end
    local env_profile = getenv("WOLKVOX_PROFILE")
    local named = profile or (env_profile ~= "" and env_profile) or nil
    profile = named or "default"
    local warnings = {}
    -- A regular file of at most CONFIG_FILE_MAX bytes: a FIFO, a device or
    -- a directory is refused without being read.
    local text, err, why = options.read_small_file(path, "the config file", options.CONFIG_FILE_MAX)
    if not text then
        if why == "refused" then
            return nil, err
        elseif explicit then
            return nil, "cannot read the config file " .. path .. (why == "unreadable" and (" (" .. err .. ")") or "")
        elseif named and named ~= "default" then
            return nil, "no profile '" .. named .. "': there is no config file " .. path
        end
        return {}, warnings
    end
    local m = options.file_mode(path)
    if m and tonumber(m:sub(-2), 8) ~= 0 then
        warnings[#warnings + 1] = format("the config file %s can be read by others (mode %s): chmod 600 it",
            path, m)
    end
    -- A mistake in the profile in use (or outside any) stops the run; one in
    -- another profile is said, and this one is used.
    local all, problems = M.parse(text, path)
    for _, p in ipairs(problems) do
        if p.profile == nil or p.profile == profile then
            return nil, p.message
        end
        warnings[#warnings + 1] = p.message .. " (in the profile " .. p.profile .. ", not in use)"
    end
    local o = all[profile]
    if not o then
        if named and named ~= "default" then
            return nil, "no profile '" .. named .. "' in " .. path
        end
        o = {}
    end
    return o, warnings
end

return M
