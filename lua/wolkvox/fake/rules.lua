--- The documented behaviours of single endpoints, for the fake server:
-- checks of write bodies (records per call, option lengths, enumerated
-- values, empty bodies, uploads), the firewall allow-list of `add_ip` /
-- `remove_ip`, `codify_chat`'s 422, `delete_files`' per-file results, and
-- the paged lookups (`list_files`' cursor, the pages of
-- `conversations_today_by_customer`).  Where the vendor documents the
-- status but not the text, the text is the fake's own and `ASSUMED` says so.
-- @module wolkvox.fake.rules

local format, tostring, tonumber, floor = string.format, tostring, tonumber, math.floor

local M = {}

--- Messages: the vendor's where it documents one, else the fake's own.
M.MSG = {
    missing = "SOME PARAMETERS ARE REQUIRED",
    invalid_value = "SOME PARAMETERS ARE NOT VALID",                                -- assumed text
    too_many_records = "THE MAXIMUM NUMBER OF RECORDS PER REQUEST IS 10000",         -- assumed text
    too_long = "THE FIELD %s EXCEEDS THE MAXIMUM OF %d CHARACTERS",                 -- assumed text
    ip_registered = "IP ALREADY REGISTERED",                                        -- assumed text
    ip_not_registered = "IP NOT REGISTERED",                                        -- assumed text
    ip_invalid = "THE IP IS NOT VALID",                                             -- assumed text
    ip_cap = "THE LIMIT OF 5 PERMANENT IPS HAS BEEN REACHED",                       -- assumed text
    chat_code = "El codAct no es valido para la operacion del chat.",
    no_file = "File upload is required",                                            -- the docs' start
    too_many_files = "THE MAXIMUM NUMBER OF FILES PER REQUEST IS 50",               -- assumed text
    disabled = "THE API IS NOT ENABLED ON THIS SERVER",                             -- assumed text
    too_soon = "ONLY ONE MESSAGE PER CUSTOMER EVERY %g SECONDS",                    -- assumed status and text
}

--- Which messages are the fake's own (the vendor's text was not captured).
M.ASSUMED = { invalid_value = true, too_many_records = true, too_long = true, ip_registered = true,
    ip_not_registered = true, ip_invalid = true, ip_cap = true, too_many_files = true, disabled = true,
    too_soon = true }

--- Limits the vendor documents.
M.MAX_RECORDS = 10000      -- records per upload call (add_record)
M.MAX_PERMANENT_IPS = 5    -- add_ip, per operation
M.MAX_AUDIO_FILES = 50     -- upload_audio, per request

-- ---- helpers --------------------------------------------------------------------

-- An IPv4 address as add_ip documents it: four decimal numbers of 0-255
-- ("203.0.113.7"); the short forms inet_aton(3) also takes ("10.1", "1")
-- are not addresses to the vendor's firewall.
local function valid_ipv4(s)
    if type(s) ~= "string" then
        return false
    end
    local a, b, c, d = s:match("^(%d%d?%d?)%.(%d%d?%d?)%.(%d%d?%d?)%.(%d%d?%d?)$")
    if not a then
        return false
    end
    for _, x in ipairs { a, b, c, d } do
        if tonumber(x) > 255 then
            return false
        end
    end
    return true
end
M.valid_ipv4 = valid_ipv4

--- The parts of a multipart body: `{ name, filename }` each.
function M.parts(req)
    local ctype = req.headers and req.headers["content-type"] or ""
    local boundary = ctype:match("boundary=\"?([^\";]+)")
    local out = {}
    if not boundary then
        return out
    end
    local body = req.body or ""
    local marker = "--" .. boundary
    local i = 1
    while true do
        local a, b = body:find(marker, i, true)
        if not a then
            break
        end
        local head_end = body:find("\r\n\r\n", b, true)
        if not head_end or body:sub(b + 1, b + 2) == "--" then
            break
        end
        local head = body:sub(b + 1, head_end)
        local name = head:match('[Nn]ame="([^"]*)"')
        if name then
            out[#out + 1] = { name = name, filename = head:match('filename="([^"]*)"') }
        end
        i = head_end + 4
    end
    return out
end

-- True when a JSON body is `{}` or `[]`.
local function empty(v)
    return type(v) == "table" and next(v) == nil
end

-- True when the body of `e` has a field a source does not call optional.
local function needs_fields(e)
    for _, f in ipairs(e.body and e.body.fields or {}) do
        if f.required ~= false then
            return true
        end
    end
    return false
end

-- ---- the checks ------------------------------------------------------------------

--- Check request `req` (its JSON body decoded as `body`) of endpoint `e`
-- against the documented rules: nil when it may be answered, else
-- `status, message, message key`.
function M.check(e, req, body, state)
    local params = req.params
    for _, p in ipairs(e.query or {}) do
        local v = params[p.name]
        if p.values and v ~= nil and v ~= "" then
            local ok = false
            for _, allowed in ipairs(p.values) do
                ok = ok or allowed == v
            end
            if not ok then
                return 400, M.MSG.invalid_value, "invalid_value"
            end
        end
    end
    if e.body and e.body.kind ~= "multipart" and not e.body.optional and empty(body) and needs_fields(e) then
        return 400, M.MSG.missing, "missing"
    end
    local name = e.name
    if name == "campaign/add_record" and type(body) == "table" then
        if #body > M.MAX_RECORDS then
            return 400, M.MSG.too_many_records, "too_many_records"
        end
        for _, record in ipairs(body) do
            for field, max in pairs(e.max_len or {}) do
                local v = type(record) == "table" and record[field]
                if type(v) == "string" and select(2, v:gsub("[^\128-\191]", "")) > max then
                    return 400, format(M.MSG.too_long, field, max), "too_long"
                end
            end
        end
    elseif name == "wolkvox_storage/upload_files" then
        local files = 0
        for _, p in ipairs(M.parts(req)) do
            if (p.name == "file" or p.name == "file[]") and p.filename then
                files = files + 1
            end
        end
        if files == 0 then
            return 400, M.MSG.no_file, "no_file"
        end
    elseif name == "configuration/upload_audio" then
        local files = 0
        for _, p in ipairs(M.parts(req)) do
            if p.filename then
                files = files + 1
            end
        end
        if files == 0 then
            return 400, M.MSG.no_file, "no_file"
        elseif files > M.MAX_AUDIO_FILES then
            return 400, M.MSG.too_many_files, "too_many_files"
        end
    elseif name == "configuration/add_ip" or name == "configuration/remove_ip" then
        local ip = type(body) == "table" and body.ip
        if not valid_ipv4(ip) then
            return 406, M.MSG.ip_invalid, "ip_invalid"
        end
        local ips = state.ips
        if name == "configuration/remove_ip" then
            if not ips[ip] then
                return 404, M.MSG.ip_not_registered, "ip_not_registered"
            end
            ips[ip] = nil
            return nil
        end
        if ips[ip] then
            return 404, M.MSG.ip_registered, "ip_registered"
        end
        local permanent = body.permanent == "yes" or body.permanent == "1" or body.permanent == true
        if permanent then
            local n = 0
            for _, v in pairs(ips) do
                n = n + (v.permanent and 1 or 0)
            end
            if n >= M.MAX_PERMANENT_IPS then
                return 400, M.MSG.ip_cap, "ip_cap"
            end
        end
        ips[ip] = { permanent = permanent, description = type(body) == "table" and body.description or nil }
    elseif name == "whatsapp/send_message_mobil" and type(body) == "table" then
        -- Documented: one message to a given customer every 20 s.
        local interval, tel = state.config.whatsapp_interval, tostring(body.telephone)
        local now, last = state.now(), state.sent_to[tel]
        if interval and last and now - last < interval then
            return 400, format(M.MSG.too_soon, interval), "too_soon"
        end
        state.sent_to[tel] = now
    elseif name == "whatsapp/codify_chat" and type(body) == "table" then
        -- A missing codAct is no code the operation allows for chats either.
        local code, allowed = tostring(body.codAct), false
        for _, c in ipairs(state.config.chat_codes or {}) do
            allowed = allowed or tostring(c) == code
        end
        if not allowed then
            return 422, M.MSG.chat_code, "chat_code"
        end
    end
    return nil
end

-- ---- answers of their own ---------------------------------------------------------

--- The files of the fake's storage: `n` files named file-001.wav ...
local function file_item(i, now)
    local name = format("file-%03d.wav", i)
    return { name = "recordings/" .. name, file_name = name, contentType = "audio/wav", id = tostring(i),
        updated = os.date("!%Y-%m-%d %H:%M:%S", now - i * 86400), isDirectory = "false",
        size = format("%.2f", (i % 7 + 1) * 0.37) }
end

--- `list_files`: a page of `limit` files from the cursor `page_token`;
-- the last page's `next_page_token` is "".
function M.list_files(body, cfg, now)
    body = type(body) == "table" and body or {}
    local total = cfg.storage_files or 25
    local limit = floor(tonumber(body.limit) or 10)
    if limit < 1 then
        limit = 10
    end
    local from = 0
    if type(body.page_token) == "string" and body.page_token ~= "" then
        from = tonumber(body.page_token:match("^p(%d+)$")) or -1
        if from < 0 then
            return nil
        end
    end
    local items = {}
    for i = from + 1, math.min(total, from + limit) do
        items[#items + 1] = file_item(i, now)
    end
    local next_from = from + limit
    return { items = items, pagination = { limit = tostring(limit),
        next_page_token = next_from < total and ("p" .. next_from) or "" } }
end

--- `conversations_today_by_customer`: page `pagina_mensajes` (from 1) of
-- the chat's messages, 10 a page.
function M.conversation(body, cfg, now)
    body = type(body) == "table" and body or {}
    local total, per = cfg.chat_messages or 25, 10
    local page = floor(tonumber(body.pagina_mensajes) or 1)
    if page < 1 then
        page = 1
    end
    local pages = math.max(1, math.ceil(total / per))
    local first, last = (page - 1) * per + 1, math.min(total, page * per)
    local messages = {}
    for i = first, last do
        messages[#messages + 1] = { fecha_hora = os.date("!%Y-%m-%d %H:%M:%S", now - (total - i) * 60),
            quien_hablo = i % 2 == 1 and "cliente" or "agente", mensaje = "mensaje " .. i }
    end
    return { {
        chat_id = tostring(body.chat_id or "1"), fecha_hora_inicio = os.date("!%Y-%m-%d %H:%M:%S", now - total * 60),
        canal = "whatsapp", estado_chat = "activo", agent_id = "1001", conversacion = messages,
        paginacion_mensajes = { pagina = tostring(page), mensajes_por_pagina = tostring(per),
            total_registros = tostring(#messages), total_mensajes = tostring(total), total_paginas = tostring(pages),
            registro_desde = tostring(#messages > 0 and first or 0),
            registro_hasta = tostring(#messages > 0 and last or 0) },
    } }
end

--- `delete_files`: the per-file results (a name with "new" in it is younger
-- than 90 days and refused) and the status: 200 when every file was
-- deleted, 207 otherwise.
function M.delete_files(body)
    local files, refused = {}, 0
    local list = type(body) == "table" and type(body.files) == "table" and body.files or {}
    for i, name in ipairs(list) do
        local young = tostring(name):find("new", 1, true) ~= nil
        refused = refused + (young and 1 or 0)
        files[i] = { name = tostring(name), code = young and "403" or "200",
            message = young and "files younger than 90 days cannot be deleted" or "deleted" }
    end
    return { files = files }, refused == 0 and 200 or 207
end

return M
