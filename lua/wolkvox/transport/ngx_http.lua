--- The HTTP/1.1 client of the OpenResty transport, on nginx cosockets: URL
-- parsing, one exchange (connect, TLS, request, status line, headers, body
-- read under a size cap, gzip through `wolkvox.inflate`, decode), multipart
-- bodies and the error reasons of `wolkvox.transport`.  Kept apart from the
-- transport (`wolkvox.transport.ngx`), which adds pooling, light threads
-- and the contract, as lua-resty-http keeps its connect step apart.
-- @module wolkvox.transport.ngx_http

local type, tostring, tonumber, ipairs, concat, format, lower, min =
    type, tostring, tonumber, ipairs, table.concat, string.format, string.lower, math.min

local M = {}

-- How long an idle connection stays in the pool, and how many are kept.
local KEEPALIVE_MS, POOL_SIZE = 60000, 8

local function now()
    ngx.update_time()
    return ngx.now()
end

local transport = require "wolkvox.transport"
local printable = transport.snippet

local function parse_url(url)
    local scheme, authority, path = url:match("^(https?)://([^/]+)(.*)$")
    if not scheme then
        return nil
    end
    local host, port = authority:match("^%[(.+)%]:?(%d*)$")
    if not host then
        host, port = authority:match("^([^:]+):?(%d*)$")
    end
    port = tonumber(port) or (scheme == "https" and 443 or 80)
    return scheme, host, port, path ~= "" and path or "/", authority
end

local function reason_of(err)
    local e = lower(tostring(err))
    if e:find("timeout", 1, true) then
        return "timeout"
    elseif e:find("resolve", 1, true) or e:find("resolver", 1, true) then
        return "dns"
    elseif e:find("refused", 1, true) or e:find("unreachable", 1, true) then
        return "connect"
    elseif e:find("closed", 1, true) or e:find("reset", 1, true) or e:find("broken pipe", 1, true) then
        return "reset"
    end
    return "other"
end

-- Parts reach the wire inside quoted header values: no quote and no
-- control character may end the value early or start a header of its own.
local function bad_text(v)
    return type(v) == "string" and v:find('[%c"\127]') ~= nil
end

-- Raise (a programming error, as the C session does) for a request that
-- cannot be sent as given.
local function check_request(req)
    if req.content_type ~= nil and (type(req.content_type) ~= "string" or req.content_type:find("[%c\127]")) then
        error("bad field 'content_type' (control characters are not allowed)", 0)
    end
    for i, line in ipairs(req.headers or {}) do
        if type(line) ~= "string" or line:find("[\r\n%z]") then
            error(format("bad header #%d (control characters are not allowed)", i), 0)
        end
    end
    if req.parts ~= nil then
        if type(req.parts) ~= "table" or req.parts[1] == nil then
            error("bad field 'parts' (non-empty list expected)", 0)
        end
        for i, p in ipairs(req.parts) do
            if type(p) ~= "table" or type(p.name) ~= "string" or bad_text(p.name) or bad_text(p.filename)
                or bad_text(p.content_type) then
                error(format("bad part #%d (control characters or quotes in name, filename or content_type)", i),
                    0)
            end
        end
    end
end
M.check_request = check_request

--- A multipart/form-data body for checked `parts`, and its content type;
-- nil and a message when a file cannot be read.
local function multipart(parts)
    local boundary = format("wolkvox-%08x%08x", math.random(0, 0x7fffffff), math.random(0, 0x7fffffff))
    local out = {}
    for _, p in ipairs(parts) do
        local data = p.data
        if p.path then
            local f = io.open(p.path, "rb")
            if not f then
                return nil, "cannot read file " .. p.path
            end
            data = f:read("*a")
            f:close()
        end
        out[#out + 1] = "--" .. boundary .. "\r\n"
        local disp = 'Content-Disposition: form-data; name="' .. p.name .. '"'
        if p.filename then
            disp = disp .. '; filename="' .. p.filename .. '"'
        end
        out[#out + 1] = disp .. "\r\n"
        if p.content_type or p.filename then
            out[#out + 1] = "Content-Type: " .. (p.content_type or "application/octet-stream") .. "\r\n"
        end
        out[#out + 1] = "\r\n" .. data .. "\r\n"
    end
    out[#out + 1] = "--" .. boundary .. "--\r\n"
    return concat(out), "multipart/form-data; boundary=" .. boundary
end
M.multipart = multipart

-- ---- one exchange ------------------------------------------------------------

-- Limits on what the server may send before the body (libcurl's: 100 KiB a
-- header line, 300 KiB in all), and on a chunk-size line.
local MAX_LINE, MAX_HEAD, MAX_CHUNK_LINE = 100 * 1024, 300 * 1024, 1024

-- One line (ended by LF, a CR before it dropped) of at most `limit` bytes,
-- read in pieces so a longer one never sits in memory: the line; or nil,
-- "too long"; or nil, the socket's error and the bytes read before it.
local function read_line(sock, limit)
    local it = sock:receiveuntil("\n")
    local parts, n = {}, 0
    while true do
        local data, err, partial = it(4096)
        if not data then
            if err then
                return nil, err, n + #(partial or "")
            end
            break
        end
        n = n + #data
        if n > limit then
            return nil, "too long"
        end
        parts[#parts + 1] = data
    end
    local line = concat(parts)
    if line:sub(-1) == "\r" then
        line = line:sub(1, -2)
    end
    return line
end

local function cut_reason(err)
    if err == "too long" then
        return "protocol"
    end
    return err == "timeout" and "timeout" or "partial"
end

-- Where the body's pieces go: collected into one string (`result()`), or
-- handed to a streaming decoder as they arrive (see `streaming`).
local function collector()
    local parts = {}
    return {
        put = function(_, piece) parts[#parts + 1] = piece end,
        result = function() return concat(parts) end,
    }
end

-- The body, sent chunked: the size cap checked before each chunk is read.
local function read_chunked(sock, cap, out)
    local total = 0
    while true do
        local line, err = read_line(sock, MAX_CHUNK_LINE)
        if not line then
            return nil, cut_reason(err), err == "too long" and "chunk-size line too long" or err
        end
        local hex = line:match("^(%x+)[ \t]*$") or line:match("^(%x+)[ \t]*;")
        if not hex or #hex > 15 then
            return nil, "protocol", "bad chunk size"
        end
        local size = tonumber(hex, 16)
        if size == 0 then
            local seen = 0
            repeat -- trailers, up to the empty line
                line, err = read_line(sock, MAX_LINE)
                if not line then
                    if err == "too long" then
                        return nil, "protocol", "trailer line too long"
                    end
                    break -- the body itself is whole
                end
                seen = seen + #line
                if seen > MAX_HEAD then
                    return nil, "protocol", "trailers too long"
                end
            until line == ""
            return true
        end
        total = total + size
        if total > cap then
            return nil, "too_large"
        end
        local piece
        piece, err = sock:receive(size)
        if not piece then
            return nil, cut_reason(err), err
        end
        out:put(piece)
        local crlf
        crlf, err = sock:receive(2)
        if not crlf then
            return nil, cut_reason(err), err
        end
        if crlf ~= "\r\n" then
            return nil, "protocol", "chunk data not followed by CRLF"
        end
    end
end

-- The body up to the end of the connection, the cap checked as it grows.
local function read_to_close(sock, cap, out)
    local total = 0
    while true do
        local data, err = sock:receiveany(65536)
        if not data then
            if err == "closed" then
                return true
            end
            return nil, cut_reason(err), err
        end
        total = total + #data
        if total > cap then
            return nil, "too_large"
        end
        out:put(data)
    end
end

-- Exactly `n` bytes, in pieces of at most 64 KiB (so a streaming decoder
-- starts on the first ones).
local function read_length(sock, n, out)
    while n > 0 do
        local piece, err, partial = sock:receive(min(n, 65536))
        if not piece then
            return nil, cut_reason(err), err, partial
        end
        out:put(piece)
        n = n - #piece
    end
    return true
end

-- Read the body into `out`: Content-Length, chunked, or to the end.  On
-- success true, and whether the connection may be reused; else nil, the
-- reason and what went wrong.
local function read_body(sock, h, cap, status, method, out)
    if method == "HEAD" or status == 204 or status == 304 or (status >= 100 and status < 200) then
        return true, true
    end
    local te = h["transfer-encoding"]
    if te and lower(te):find("chunked", 1, true) then
        local ok, why, detail = read_chunked(sock, cap, out)
        if not ok then
            return nil, why, detail
        end
        return true, true
    end
    local cl = h["content-length"]
    if cl and not te then
        local n = cl:match("^%d+$") and tonumber(cl)
        if not n then
            return nil, "protocol", "bad Content-Length"
        end
        if n > cap then
            return nil, "too_large"
        end
        local ok, why, detail = read_length(sock, n, out)
        if not ok then
            return nil, why, detail
        end
        return true, true
    end
    local ok, why, detail = read_to_close(sock, cap, out)
    if not ok then
        return nil, why, detail
    end
    return true, false
end

-- A collector that decodes the answer as it arrives (`self.decoder()`, the
-- C core's incremental decoder with the token masked) and gives the event
-- loop back after each piece, so a big answer never holds the worker for
-- its whole decode.  `result()` is the decoded value, or nil and the error
-- and a snippet of the answer's start.  With `spool` (a `wolkvox.spool`)
-- the bytes go to it and the rows are only checked and counted:
-- `counted()` then says how many, and whether they were streamed.
local function streaming(self, spool)
    local d = self.decoder(spool ~= nil)
    local rows, n, head, bytes, failed = {}, 0, {}, 0, nil
    local total, streamed, disk
    local head_len = 200 + 6 * 64
    return {
        put = function(_, piece)
            bytes = bytes + #piece
            if bytes - #piece < head_len then
                head[#head + 1] = piece:sub(1, head_len)
            end
            if failed then
                return
            end
            if spool then
                local ok, werr = spool:write(piece)
                if not ok then
                    failed, disk = werr, true
                    return
                end
            end
            local got, err = d:feed(piece)
            if not got then
                failed = err
                return
            end
            for i = 1, #got do
                n = n + 1
                rows[n] = got[i]
            end
            ngx.sleep(0) -- let the worker serve its other requests
        end,
        bytes = function() return bytes end,
        counted = function() return total, streamed end,
        disk_failed = function() return disk end,
        result = function()
            if not failed then
                local env, last
                env, last, total = d:finish()
                streamed = d:streamed()
                if env == nil and type(last) == "string" then
                    failed = last
                else
                    for i = 1, #last do
                        n = n + 1
                        rows[n] = last[i]
                    end
                    local shape = d:shape()
                    if shape == "array" then
                        return rows
                    elseif shape == "envelope" and d:streamed() then
                        env.data = rows
                    end
                    return env
                end
            end
            return nil, failed, concat(head)
        end,
    }
end

-- A gzip or deflate answer inflated as it arrives (`wolkvox.inflate`'s
-- stream) and handed to `inner`, a streaming collector: the decode yields
-- to the worker piece by piece for compressed answers too.  `zerror()` is
-- what stopped the inflater ("too_large" or a message), `wire()` the
-- compressed bytes read.
local function gunzipping(inf, inner)
    local wire, zerr = 0, nil
    return {
        put = function(_, piece)
            wire = wire + #piece
            if zerr then
                return
            end
            local parts, err = inf:push(piece)
            if not parts then
                zerr = err
                return
            end
            for i = 1, #parts do
                inner:put(parts[i])
            end
        end,
        bytes = inner.bytes,
        counted = inner.counted,
        disk_failed = inner.disk_failed,
        wire = function() return wire end,
        zerror = function()
            if not zerr then
                local ok, err = inf:finish()
                zerr = not ok and err or nil
            end
            return zerr
        end,
        result = inner.result,
    }
end

-- The error of a compressed answer that could not be inflated: past the
-- size cap, or not gzip/deflate at all.
local function inflate_error(self, why)
    if why == "too_large" then
        return transport.too_large(self.max_bytes)
    end
    return { kind = "transport", reason = "protocol", sent = true, message = why }
end

-- One request on one connection: returns the result table, and whether it
-- may be sent again on a new connection (a reused one died before answering).
function M.exchange(self, req, head_of, res, t0)
    local scheme, host, port, path, authority = parse_url(req.url)
    if not scheme then
        res.error = { kind = "transport", reason = "url", message = "bad URL", sent = false }
        return res
    end
    local limit_ms = req.timeout and min(self.timeout_ms, req.timeout * 1000) or self.timeout_ms
    local remaining = function()
        return math.max(1, limit_ms - (now() - t0) * 1000)
    end
    local sock = ngx.socket.tcp()
    sock:settimeouts(min(self.connect_ms, remaining()), remaining(), remaining())
    local pool = format("wolkvox:%s:%d:%s", host, port, scheme)
    if req.fresh then
        self.fresh_seq = self.fresh_seq + 1
        pool = pool .. ":fresh" .. self.fresh_seq -- never shared, never reused
    end
    local ok, err = sock:connect(host, port, { pool = pool })
    if not ok then
        res.error = { kind = "transport", reason = reason_of(err), message = "connect: " .. tostring(err),
            sent = false }
        return res
    end
    local reused = (sock:getreusedtimes() or 0) > 0
    if not reused then
        res.connects = res.connects + 1
        self.connects = self.connects + 1
        if scheme == "https" then
            local sess
            sess, err = sock:sslhandshake(nil, host, self.verify)
            if not sess then
                sock:close()
                res.error = { kind = "transport", reason = reason_of(err) == "timeout" and "timeout" or "tls",
                    message = "TLS: " .. tostring(err), sent = false }
                return res
            end
        end
    end
    local body, ctype = req.body, req.content_type
    if req.parts then
        check_request(req)
        body, ctype = multipart(req.parts)
        if not body then
            res.error = { kind = "transport", reason = "other", message = ctype, sent = false }
            return res
        end
    end
    local lines = { (req.method or "GET") .. " " .. path .. " HTTP/1.1", "Host: " .. authority,
        head_of(), "Accept: application/json", "Accept-Encoding: gzip, deflate",
        "User-Agent: " .. self.user_agent }
    for _, hline in ipairs(req.headers or {}) do
        lines[#lines + 1] = hline
    end
    if body or req.method ~= "GET" then
        body = body or ""
        lines[#lines + 1] = "Content-Type: " .. (ctype or "application/json")
        lines[#lines + 1] = "Content-Length: " .. #body
    end
    if req.fresh then
        lines[#lines + 1] = "Connection: close"
    end
    local bytes
    bytes, err = sock:send(concat(lines, "\r\n") .. "\r\n\r\n" .. (body or ""))
    res.sends = res.sends + 1
    if not bytes then
        sock:close()
        res.error = { kind = "transport", reason = reason_of(err), message = "send: " .. tostring(err),
            sent = true }
        return res, reused
    end
    local status_line, got
    sock:settimeout(remaining())
    status_line, err, got = read_line(sock, MAX_LINE)
    if not status_line and err ~= "too long" and got == 0 then
        sock:close()
        res.error = { kind = "transport", reason = err == "timeout" and "timeout" or "reset",
            message = "no answer: " .. tostring(err), sent = true }
        return res, reused and err ~= "timeout"
    end
    local version, status = (status_line or ""):match("^HTTP/(%d%.%d) (%d%d%d)")
    if not status then
        sock:close()
        local reason = (status_line or err == "too long") and "protocol" or cut_reason(err)
        res.error = { kind = "transport", reason = reason, sent = true,
            message = status_line and "not an HTTP answer" or ("status line: " .. tostring(err)) }
        return res
    end
    res.status = tonumber(status)
    local h, head_bytes = {}, #status_line
    while true do
        local line
        line, err = read_line(sock, MAX_LINE)
        if line then
            head_bytes = head_bytes + #line + 2
        end
        if not line or head_bytes > MAX_HEAD then
            sock:close()
            if err == "too long" or line then
                res.error = { kind = "transport", reason = "protocol", sent = true,
                    message = format("header %s longer than %d bytes", line and "block" or "line",
                        line and MAX_HEAD or MAX_LINE) }
            else
                res.error = { kind = "transport", reason = err == "timeout" and "timeout" or "partial",
                    message = "headers cut short: " .. tostring(err), sent = true }
            end
            return res
        end
        if line == "" then
            break
        end
        local name, value = line:match("^([^:]+):%s*(.-)%s*$")
        if name then
            h[lower(name)] = value
        end
    end
    res.content_type, res.retry_after = self.mask(h["content-type"]), self.mask(h["retry-after"])
    sock:settimeout(remaining())
    -- An answer sent as it is (no gzip), to be decoded, is decoded as it
    -- arrives when the C core is there; else the body is read whole first.
    local enc = lower(h["content-encoding"] or "")
    local zipped = enc == "gzip" or enc == "deflate"
    local inf
    if zipped and req.decode ~= false and self.decoder ~= nil then
        inf = require("wolkvox.inflate").stream(self.max_bytes)
    end
    local stream = (enc == "" or inf ~= nil) and req.decode ~= false and self.decoder ~= nil
    local spool
    if stream and req.spool and self.spool then
        local why
        spool, why = self.spool(req.spool)
        if not spool then
            sock:close()
            res.error = { kind = "transport", reason = "spool", sent = true, message = why }
            return res
        end
    end
    local out = stream and streaming(self, spool) or collector()
    if stream and inf then
        out = gunzipping(inf, out)
    end
    -- On success `why` says whether the connection may be reused.
    local read, why, detail = read_body(sock, h, self.max_bytes, res.status, req.method, out)
    if not read then
        sock:close()
        if why == "too_large" then
            res.error = transport.too_large(self.max_bytes)
        else
            res.error = { kind = "transport", reason = why, sent = true,
                message = "body: " .. tostring(detail or why) }
        end
        return res
    end
    local keep = why and version == "1.1" and lower(h.connection or "") ~= "close" and not req.fresh
    if keep then
        sock:setkeepalive(KEEPALIVE_MS, POOL_SIZE)
    else
        sock:close()
    end
    if stream then
        local n = out.bytes()
        res.wire_bytes, res.bytes = out.wire and out.wire() or n, n
        self.bytes = self.bytes + n
        local zerr = out.zerror and out.zerror()
        if zerr then
            if spool then
                spool:close()
            end
            res.error = inflate_error(self, zerr)
            return res
        end
        if n > 0 then
            local v, derr, head = out.result()
            if v == nil then
                if out.disk_failed() then
                    res.error = { kind = "transport", reason = "spool", sent = true, message = derr }
                    spool:close()
                    return res
                end
                res.decode_error, res.snippet = self.mask(tostring(derr)), printable(self.mask(head))
            else
                res.value = v
                if spool then
                    res.rows, res.streamed = out.counted()
                    res.spool = spool
                end
            end
        end
        return res
    end
    local raw = out.result()
    res.wire_bytes = #raw
    if enc == "gzip" or enc == "deflate" then
        local text, zerr = require("wolkvox.inflate").inflate(raw, self.max_bytes)
        if not text then
            res.error = inflate_error(self, zerr)
            return res
        end
        raw = text
    end
    res.bytes = #raw
    self.bytes = self.bytes + #raw
    if req.decode == false then
        res.body = raw
    elseif #raw > 0 then
        local v, derr = self.decode(raw)
        if v == nil then
            -- Masked whole before it is cut: a token across the edge leaves nothing.
            res.decode_error, res.snippet = self.mask(tostring(derr)), printable(self.mask(raw))
        else
            res.value = v
        end
    end
    return res
end

return M
