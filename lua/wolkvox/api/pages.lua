--- Following a paged lookup's cursor to its end: `c:pages` and
-- `c:all_pages`.  Each page is one call of the endpoint (checked, paced,
-- retried and counted like any other); the registry says how an endpoint
-- pages (its `cursor` entry, see `wolkvox.api.endpoints`):
--
-- * `cursor = "token"` (`wolkvox_storage/list_files`): the answer's
--   `cursor_next` (`data.pagination.next_page_token`) goes back as
--   `cursor_param` (`page_token`) until it is empty.  A token that comes
--   back a second time would loop forever: it is refused.
-- * `cursor = "page"` (`whatsapp/conversations_today_by_customer`): pages
--   numbered from 1 in `cursor_param` (`pagina_mensajes`) up to the number
--   at `cursor_last`, or up to the first page without items when the answer
--   does not say.
--
-- `max_pages` (default `DEFAULT_MAX_PAGES`) bounds the calls: a cursor that
-- has not ended by then stops with a `params` error that says where to go
-- on from (`err.next`), before another call is spent.
-- @module wolkvox.api.pages

local errors = require "wolkvox.errors"

local type, pairs, ipairs, tostring, tonumber, format, floor, error, pcall =
    type, pairs, ipairs, tostring, tonumber, string.format, math.floor, error, pcall

local M = {}

--- Pages one iteration follows unless `max_pages` says otherwise (each a
-- call of the day's quota).
M.DEFAULT_MAX_PAGES = 100

--- The value at `path` in `v`: dotted keys, a number indexes a list
-- ("1.paginacion_mensajes.total_paginas"); nil when any step is missing.
function M.path(v, path)
    for key in path:gmatch("[^%.]+") do
        if type(v) ~= "table" then
            return nil
        end
        local n = tonumber(key)
        local x = n and v[n]
        if x == nil then
            x = v[key]
        end
        v = x
    end
    return v
end

-- How `e` pages: its registry entry's cursor, or the caller's own
-- (`opts.cursor`: the same keys without the `cursor_` prefix, for an
-- endpoint the registry does not describe yet).
local function cursor_of(e, opts)
    local own = opts.cursor
    if own ~= nil then
        if type(own) ~= "table" or (own.type ~= "token" and own.type ~= "page")
            or type(own.param) ~= "string" or type(own.items) ~= "string" then
            errors.refuse(e, "cursor must be a table { type = \"token\" | \"page\", param = name, "
                .. "items = path, next = path (token) | last = path (page) }")
        end
        return own
    end
    if not e.cursor then
        errors.refuse(e, e.api .. " does not page: the registry knows no cursor for it"
            .. (e.api == "agent_chat" and " (agent_chat documents no page parameter)" or "")
            .. "; call it once, or describe its cursor with { cursor = { ... } }")
    end
    return { type = e.cursor, param = e.cursor_param, next = e.cursor_next, last = e.cursor_last,
        items = e.cursor_items }
end

local function check(e, params, opts)
    if params ~= nil and type(params) ~= "table" then
        errors.refuse(e, "parameters must be a table (got " .. type(params) .. ")")
    end
    if opts ~= nil and type(opts) ~= "table" then
        errors.refuse(e, "options must be a table (got " .. type(opts) .. ")")
    end
    opts = opts or {}
    local max = opts.max_pages
    if max == nil then
        max = M.DEFAULT_MAX_PAGES
    elseif type(max) ~= "number" or max ~= max or max < 1 or (max ~= math.huge and max ~= floor(max)) then
        errors.refuse(e, "max_pages must be a whole number of at least 1 (math.huge: no guard)")
    end
    return params or {}, opts, max
end

--- An iterator over the pages of endpoint `e`: each step calls `call(params)`
-- (one call of the endpoint, raising its structured error) and returns the
-- page's items (a list) and a meta: the call's own plus `page` (1, 2, ...),
-- `cursor` (what was sent: a token, "" for the first, or a page number),
-- `next` (the next cursor; nil after the last page) and `data` (the whole
-- answer).  Raises the structured error of a call, of the `max_pages` guard
-- and of a cursor that repeats itself.
-- @tparam table e the endpoint
-- @tparam[opt] table params the endpoint's parameters (the cursor's own
--   parameter, if given, is where the iteration starts)
-- @tparam[opt] table opts `max_pages`, `cursor`
-- @tparam function call one call: `call(params)` -> data, meta
function M.iterate(e, params, opts, call)
    local max
    params, opts, max = check(e, params, opts)
    local cur = cursor_of(e, opts)
    local param = cur.param
    local at = params[param]
    if cur.type == "page" then
        at = floor(tonumber(at) or 1)
    else
        at = at ~= nil and tostring(at) or ""
    end
    local seen, n, done, calls = { [at] = true }, 0, false, 0
    return function()
        if done then
            return nil
        end
        if n >= max then
            done = true
            errors.throw("params", { endpoint = e.name, calls = calls, pages = n, next = at,
                message = format("the cursor of %s did not end after %d page(s) (max_pages); nothing more "
                    .. "was spent: pass max_pages = %d or more to follow it further, or start from %s = %s",
                    e.api, n, n * 2, param, tostring(at)) })
        end
        local p = {}
        for k, v in pairs(params) do
            p[k] = v
        end
        -- The first token is the caller's (or none): "" is not sent.
        if cur.type == "page" or at ~= "" then
            p[param] = at
        end
        local data, meta = call(p)
        n = n + 1
        calls = calls + (meta.calls or 0)
        local items = M.path(data, cur.items)
        if type(items) ~= "table" then
            items = {}
        end
        local nxt
        if cur.type == "token" then
            local v = M.path(data, cur.next)
            if v ~= nil and v ~= "" then
                nxt = tostring(v)
                if seen[nxt] then
                    done = true
                    errors.throw("decode", { endpoint = e.name, calls = calls, pages = n, retryable = false,
                        reason = "cursor", message = format("the server answered %s %q a second time: "
                            .. "following it would loop; stopped after %d page(s)", cur.next, nxt, n) })
                end
                seen[nxt] = true
            end
        else
            local last = tonumber(M.path(data, cur.last or ""))
            if (last and at < last) or (not last and items[1] ~= nil) then
                nxt = at + 1
            end
        end
        meta.page, meta.cursor, meta.next, meta.data = n, at, nxt, data
        if nxt == nil then
            done = true
        else
            at = nxt
        end
        return items, meta
    end
end

--- The columns of a page's items: the registry's fields under the
-- cursor's items (`items[].name` -> `name`), in its order.
function M.columns(e)
    local items = e.cursor_items and e.cursor_items:match("([^%.]+)$")
    local out = {}
    if items then
        local prefix = items .. "[]."
        for _, f in ipairs(e.fields or {}) do
            local child = f:sub(1, #prefix) == prefix and f:sub(#prefix + 1)
            if child and not child:find("[%.%[]") then
                out[#out + 1] = child
            end
        end
    end
    return out
end

--- Every item of every page of `e`, in order, and a meta: `endpoint`,
-- `pages`, `calls`, `bytes`, `items`, `cached` (pages answered from the
-- cache).  On a failure: nil and the error, with the items fetched before
-- it in `err.items` and the pages in `err.pages`.
-- @see iterate
function M.all(e, params, opts, call)
    local it = M.iterate(e, params, opts, call)
    local out, meta = {}, { endpoint = e.name, pages = 0, calls = 0, bytes = 0, cached = 0 }
    local ok, err = pcall(function()
        for items, m in it do
            for _, item in ipairs(items) do
                out[#out + 1] = item
            end
            meta.pages, meta.calls = m.page, meta.calls + (m.calls or 0)
            meta.bytes = meta.bytes + (m.bytes or 0)
            meta.cached = meta.cached + (m.cached and 1 or 0)
            meta.status, meta.code, meta.msg = m.status, m.code, m.msg
        end
    end)
    if not ok then
        if not errors.is(err) then
            error(err, 0)
        end
        if err.pages == nil then
            -- A call failed: its own calls come on top of the pages'.
            err.calls = meta.calls + (err.calls or 0)
        end
        err.items, err.pages = out, meta.pages
        return nil, err
    end
    meta.items = #out
    return out, meta
end

return M
