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
local gc_hold = require "wolkvox.transport.gc_hold"
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
-- The most read from the socket at once.
local PIECE = 65536
-- Work done between two yields to the worker's event loop (seconds), when
-- the reads never had to wait.  (Not ngx.sleep(0): lua-nginx-module without
-- the delayed-events patch, Debian's, logs a warning for each one.)
local YIELD_AFTER = 0.02

-- Reads from a cosocket under the call's deadline (`deadline`, in ngx.now()
-- seconds): every read is given what remains of the call, and takes what
-- has arrived (receiveany), so a server that drips bytes cannot stretch
-- it past the deadline.  Lines and exact byte counts are cut from its own
-- buffer (`buf`, read from `pos` on).
local Reader = {}
Reader.__index = Reader

local function reader(sock, deadline)
    return setmetatable({ sock = sock, deadline = deadline, buf = "", pos = 1, yielded = now() }, Reader)
end

-- What is left of the call, in ms (at least 1); nil when none is.
function Reader:left_ms()
    local left = (self.deadline - now()) * 1000
    if left < 1 then
        return nil
    end
    return left
end

-- The next bytes from the socket (at most `max`): the data, or nil and the
-- socket's error ("timeout" once the deadline has passed).
function Reader:more(max)
    local left = self:left_ms()
    if not left then
        return nil, "timeout"
    end
    self.sock:settimeout(left)
    return self.sock:receiveany(max or PIECE)
end

-- Give the worker's other requests a turn once this one has worked
-- YIELD_AFTER seconds without its reads having to wait.
function Reader:pace()
    local t = now()
    if t - self.yielded >= YIELD_AFTER then
        ngx.sleep(0.001)
        self.yielded = now()
    end
end

-- Send all of `data` before `deadline`, 64 KiB at a time, each piece given
-- what remains: the count sent, or nil and the error.
local function send_all(sock, data, deadline)
    local at, n = 1, #data
    repeat
        local left = (deadline - now()) * 1000
        if left < 1 then
            return nil, "timeout"
        end
        sock:settimeout(left)
        local last = min(n, at + PIECE - 1)
        local ok, err = sock:send(at == 1 and last == n and data or data:sub(at, last))
        if not ok then
            return nil, err
        end
        at = last + 1
    until at > n
    return n
end

-- One line (ended by LF, a CR before it dropped) of at most `limit` bytes:
-- the line; or nil, "too long"; or nil, the socket's error and the bytes
-- read of it before.
function Reader:line(limit)
    local parts, n = nil, 0
    while true do
        local buf, pos = self.buf, self.pos
        local i = buf:find("\n", pos, true)
        if i then
            n = n + i - pos
            if n > limit then
                return nil, "too long"
            end
            local line = buf:sub(pos, i - 1)
            self.pos = i + 1
            if parts then
                parts[#parts + 1] = line
                line = concat(parts)
            end
            if line:byte(-1) == 13 then
                line = line:sub(1, -2)
            end
            return line
        end
        n = n + #buf - pos + 1
        if n > limit then
            return nil, "too long"
        end
        if pos <= #buf then
            parts = parts or {}
            parts[#parts + 1] = pos == 1 and buf or buf:sub(pos)
        end
        local data, err = self:more()
        if not data then
            self.buf, self.pos = "", 1
            return nil, err, n
        end
        self.buf, self.pos = data, 1
    end
end

-- The next bytes, at most `max`: buffered ones first, else a read.
function Reader:piece(max)
    local buf, pos = self.buf, self.pos
    local have = #buf - pos + 1
    if have <= 0 then
        return self:more(max)
    end
    if pos == 1 and have <= max then
        self.buf = ""
        return buf
    end
    local n = min(have, max)
    self.pos = pos + n
    return buf:sub(pos, pos + n - 1)
end

-- Exactly `n` bytes (small: a CRLF), or nil and the socket's error.
function Reader:exact(n)
    local parts, got = {}, 0
    while got < n do
        local data, err = self:piece(n - got)
        if not data then
            return nil, err
        end
        parts[#parts + 1] = data
        got = got + #data
    end
    return concat(parts)
end

-- True when bytes the body did not account for were read.
function Reader:leftover()
    return self.pos <= #self.buf
end

local function cut_reason(err)
    if err == "too long" then
        return "protocol"
    end
    return err == "timeout" and "timeout" or "partial"
end

-- How much of an answer's start its error snippet may show (the snippet
-- is cut from it once the token is masked), and how long reading may go on
-- for it once the answer is known not to be JSON (seconds).
local HEAD_LEN, SNIPPET_WAIT = 200 + 6 * 64, 0.5

-- Where the body's pieces go: collected into one string (`result()`), or
-- handed to a streaming decoder as they arrive (see `streaming`).  `put`
-- returns false when the rest of the body is not wanted (it cannot be
-- JSON, it cannot be inflated, the spool failed): reading stops there.
local function collector(start)
    local parts, bytes, failed = {}, 0, nil
    return {
        put = function(_, piece)
            parts[#parts + 1] = piece
            bytes = bytes + #piece
            if not failed and start then
                failed = start(piece)
            end
            -- (once it failed, only what a snippet of its start needs)
            return not failed or bytes < HEAD_LEN
        end,
        result = function() return concat(parts) end,
        failure = function() return failed end,
    }
end

-- Hand `piece` to `out`; false when `out` wants no more.  Once `out` knows
-- the answer cannot be JSON, what is left of the call shrinks to
-- SNIPPET_WAIT: the snippet of its start does not wait on a slow server.
local function hand(r, out, piece)
    if out:put(piece) == false then
        return false
    end
    if out.failure() then
        r.deadline = min(r.deadline, now() + SNIPPET_WAIT)
    end
    r:pace()
    return true
end

-- The body, sent chunked: the size cap checked before each chunk is read,
-- a chunk read in pieces.
local function read_chunked(r, cap, out)
    local total = 0
    while true do
        local line, err = r:line(MAX_CHUNK_LINE)
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
                line, err = r:line(MAX_LINE)
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
        while size > 0 do
            local piece
            piece, err = r:piece(min(size, PIECE))
            if not piece then
                return nil, cut_reason(err), err
            end
            size = size - #piece
            if not hand(r, out, piece) then
                return nil, "stopped"
            end
        end
        local crlf
        crlf, err = r:exact(2)
        if not crlf then
            return nil, cut_reason(err), err
        end
        if crlf ~= "\r\n" then
            return nil, "protocol", "chunk data not followed by CRLF"
        end
    end
end

-- The body up to the end of the connection, the cap checked as it grows.
local function read_to_close(r, cap, out)
    local total = 0
    while true do
        local data, err = r:piece(PIECE)
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
        if not hand(r, out, data) then
            return nil, "stopped"
        end
    end
end

-- Exactly `n` bytes, in pieces of at most 64 KiB (so a streaming decoder
-- starts on the first ones).
local function read_length(r, n, out)
    while n > 0 do
        local piece, err = r:piece(min(n, PIECE))
        if not piece then
            return nil, cut_reason(err), err
        end
        n = n - #piece
        if not hand(r, out, piece) then
            return nil, "stopped"
        end
    end
    return true
end

-- Read the body into `out`: Content-Length, chunked, or to the end.  On
-- success true, and whether the connection may be reused; else nil, the
-- reason ("stopped": `out` wanted no more) and what went wrong.
local function read_body(r, h, cap, status, method, out)
    if method == "HEAD" or status == 204 or status == 304 or (status >= 100 and status < 200) then
        return true, true
    end
    local te = h["transfer-encoding"]
    if te and lower(te):find("chunked", 1, true) then
        local ok, why, detail = read_chunked(r, cap, out)
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
        local ok, why, detail = read_length(r, n, out)
        if not ok then
            return nil, why, detail
        end
        return true, true
    end
    local ok, why, detail = read_to_close(r, cap, out)
    if not ok then
        return nil, why, detail
    end
    return true, false
end

-- ---- the start of a JSON text ---------------------------------------------------
--
-- The C core's incremental decoder takes an object, an array or a string
-- as it comes, but a top-level number or literal only when it has ended,
-- scanning it again from its start at each piece: a body of 300 MiB of "a"
-- was read to the size cap at full CPU before failing.  So the first bytes
-- are judged here: after an optional byte order mark and white space, a
-- JSON text starts with one of {["-0123456789tfn; a number or a literal
-- must stay one (a prefix of true, false or null; the characters of a
-- number) and be at most MAX_SCALAR bytes.  `check(piece)` returns nil, or
-- the message of the first impossible byte; it stops looking once the text
-- is an object, an array or a string, or its scalar has ended.

local MAX_SCALAR = 1024
local BOM = { 239, 187, 191 }

local function possible_scalar(s)
    local c = s:sub(1, 1)
    if c == "t" or c == "f" or c == "n" then
        return ("true"):sub(1, #s) == s or ("false"):sub(1, #s) == s or ("null"):sub(1, #s) == s
    end
    return s:find("^%-?%d*%.?%d*[eE]?[%+%-]?%d*$") ~= nil
end

local function json_start()
    local state, seen, bom, scalar = "bom", 0, 1, ""
    local function unexpected(at)
        return format("unexpected character at byte %d", at)
    end
    return function(piece)
        if state == nil then
            return nil
        end
        local i, n = 1, #piece
        if state == "bom" then
            while i <= n and bom <= 3 and piece:byte(i) == BOM[bom] do
                bom, i = bom + 1, i + 1
            end
            if bom <= 3 and i > n then
                seen = seen + n
                return nil -- a byte order mark so far
            end
            if bom > 1 and bom <= 3 then
                return unexpected(seen + i)
            end
            state = "space"
        end
        if state == "space" then
            local j = piece:find("[^ \t\r\n]", i)
            if not j then
                seen = seen + n
                return nil
            end
            local c = piece:sub(j, j)
            if c == "{" or c == "[" or c == '"' then
                state = nil
                return nil
            elseif not c:find("^[%-%dtfn]") then
                state = nil
                return unexpected(seen + j)
            end
            state, i = "scalar", j
        end
        -- state == "scalar": its bytes up to the first that cannot be in one
        local j = piece:find("[^%w%.%+%-]", i) or n + 1
        local run = piece:sub(i, j - 1)
        for k = 1, #run do
            if #scalar + k > MAX_SCALAR then
                state = nil
                return format("a number or literal longer than %d bytes at byte %d", MAX_SCALAR, seen + i + k - 1)
            end
            if not possible_scalar(scalar .. run:sub(1, k)) then
                state = nil
                return unexpected(seen + i + k - 1)
            end
        end
        scalar = scalar .. run
        seen = seen + n
        if j <= n then
            state = nil -- it ended: the decoder judges the rest
        end
        return nil
    end
end

-- A collector that decodes the answer as it arrives (`self.decoder()`, the
-- C core's incremental decoder with the token masked), so a big answer
-- never has to exist whole.  Its `put` returns false once the answer
-- cannot be JSON (or the spool failed) and enough of it for a snippet has
-- arrived: reading stops there.  `result()` is the decoded value, or nil
-- and the error and a snippet of the answer's start.  With `spool` (a
-- `wolkvox.spool`) the bytes go to it and the rows are only checked and
-- counted: `counted()` then says how many, and whether they were streamed.
-- With `csv` (a request's: see wolkvox.transport.curl) and `lines` (a
-- `wolkvox.spool`) the rows are made into lines as they arrive, checked as
-- the decoder checks them, and the lines go to `lines` (the answer to
-- `spool` too only with `csv.keep_answer`): `extra()` and `times()` say
-- what the transfer's `lines_extra` and `times` say, `lines_failed()`
-- whether a line could not be made (the output's failure).
-- With `hold` (a table with the call's `deadline`), the worker's collector
-- is held from the answer's first `gc_hold.FROM` bytes until the exchange
-- releases it (`hold.release()`; see wolkvox.transport.gc_hold).
local function streaming(self, spool, hold, csv, lines)
    local d = self.decoder(spool ~= nil, csv)
    local start = json_start()
    local rows, n, head, bytes, failed = {}, 0, {}, 0, nil
    local total, streamed, disk
    -- `text` written to the spool `sp`; false when it could not be.
    local function to_disk(sp, text)
        if #text > 0 then
            local ok, werr = sp:write(text)
            if not ok then
                failed, disk = werr, true
                return false
            end
        end
        return true
    end
    local head_len = HEAD_LEN
    return {
        put = function(_, piece)
            bytes = bytes + #piece
            if hold then
                if hold.check then
                    hold:check(bytes)
                elseif bytes >= gc_hold.FROM then
                    -- (a small answer makes few rows: not worth a hold)
                    local h = gc_hold.start(hold.deadline, now, ngx.timer.at, ngx.sleep)
                    hold.check = h and h.check or function() end
                    hold.release = h and h.release or function() end
                end
            end
            if bytes - #piece < head_len then
                head[#head + 1] = piece:sub(1, head_len)
            end
            if failed then
                -- (the snippet of the answer's start, for the error)
                return bytes < head_len
            end
            local err = start(piece)
            if err then
                failed = err
                return bytes < head_len
            end
            if spool and not to_disk(spool, piece) then
                return false
            end
            local got
            got, err = d:feed(piece)
            if not got then
                failed = err
                return bytes < head_len
            end
            if lines then
                return to_disk(lines, got)
            end
            for i = 1, #got do
                n = n + 1
                rows[n] = got[i]
            end
            return true
        end,
        bytes = function() return bytes end,
        counted = function() return total, streamed end,
        disk_failed = function() return disk end,
        failure = function() return failed end,
        extra = function() return d:extra() end,
        times = function() return d:times() end,
        lines_failed = function() return d:lines_failed() end,
        result = function()
            if not failed then
                local env, last
                env, last, total = d:finish()
                streamed = d:streamed()
                if env == nil and type(last) == "string" then
                    failed = last
                elseif lines and not to_disk(lines, last) then
                    return nil, failed, concat(head)
                else
                    for i = 1, lines and 0 or #last do
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
-- compressed bytes read.  Its `put` returns false when the inflater or
-- `inner` wants no more.
local function gunzipping(inf, inner)
    local wire, zerr, done = 0, nil, false
    return {
        put = function(_, piece)
            wire = wire + #piece
            if zerr or done then
                return false
            end
            local parts, err = inf:push(piece)
            if not parts then
                zerr = err
                return false
            end
            for i = 1, #parts do
                if inner:put(parts[i]) == false then
                    done = true
                    return false
                end
            end
            return true
        end,
        bytes = inner.bytes,
        counted = inner.counted,
        disk_failed = inner.disk_failed,
        failure = inner.failure,
        extra = inner.extra,
        times = inner.times,
        lines_failed = inner.lines_failed,
        wire = function() return wire end,
        zerror = function()
            if not zerr and not done then
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
    -- The call's timeout holds for the whole call (both exchanges of
    -- `perform`): every socket operation is given what remains of it.
    local limit_ms = req.timeout and min(self.timeout_ms, req.timeout * 1000) or self.timeout_ms
    local deadline = t0 + limit_ms / 1000
    local remaining = function()
        return math.max(1, (deadline - now()) * 1000)
    end
    if deadline - now() <= 0 then
        res.error = { kind = "transport", reason = "timeout", message = "timed out before connecting", sent = false }
        return res
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
            sock:settimeouts(min(self.connect_ms, remaining()), remaining(), remaining())
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
    bytes, err = send_all(sock, concat(lines, "\r\n") .. "\r\n\r\n" .. (body or ""), deadline)
    res.sends = res.sends + 1
    if not bytes then
        sock:close()
        res.error = { kind = "transport", reason = reason_of(err), message = "send: " .. tostring(err),
            sent = true }
        return res, reused
    end
    local r = reader(sock, deadline)
    local status_line, got
    status_line, err, got = r:line(MAX_LINE)
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
        line, err = r:line(MAX_LINE)
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
    -- An answer sent as it is (no gzip), to be decoded, is decoded as it
    -- arrives when the C core is there; else the body is read whole first.
    local enc = lower(h["content-encoding"] or "")
    local zipped = enc == "gzip" or enc == "deflate"
    local inf
    if zipped and req.decode ~= false and self.decoder ~= nil then
        inf = require("wolkvox.inflate").stream(self.max_bytes)
    end
    local stream = (enc == "" or inf ~= nil) and req.decode ~= false and self.decoder ~= nil
    local spool, line_spool, csv
    -- Every spool of this answer let go (an error, or an answer not taken).
    local function drop_spools()
        if spool then
            spool:close()
        end
        if line_spool then
            line_spool:close()
        end
    end
    if stream and req.spool and self.spool then
        -- The rows' lines made as they arrive go to a spool of their own,
        -- the answer to one only when not asked for lines or asked to keep it.
        csv = req.csv
        local why
        if csv then
            line_spool, why = self.spool(req.spool)
        end
        if why == nil and (not csv or csv.keep_answer) then
            spool, why = self.spool(req.spool)
        end
        if why ~= nil then
            drop_spools()
            sock:close()
            res.error = { kind = "transport", reason = "spool", sent = true, message = why }
            return res
        end
    end
    local out, hold
    if stream then
        -- Rows made as the answer arrives: the worker's collector waits
        -- until they are (see wolkvox.transport.gc_hold).
        if not spool and not line_spool and self.gc_hold then
            hold = { deadline = deadline }
        end
        out = streaming(self, spool, hold, csv, line_spool)
        if inf then
            out = gunzipping(inf, out)
        end
    else
        -- (a body that is to be decoded whole is judged as it arrives too)
        out = collector(enc == "" and req.decode ~= false and json_start() or nil)
    end
    -- On success `why` says whether the connection may be reused; "stopped":
    -- the collector wanted no more (what it has says why).
    local read, why, detail = read_body(r, h, self.max_bytes, res.status, req.method, out)
    if hold and hold.release then
        hold.release()
    end
    -- (an answer known not to be JSON is that, whatever cut it short after)
    if not read and why ~= "stopped" and not out.failure() then
        sock:close()
        drop_spools()
        if why == "too_large" then
            res.error = transport.too_large(self.max_bytes)
        else
            res.error = { kind = "transport", reason = why, sent = true,
                message = "body: " .. tostring(detail or why) }
        end
        return res
    end
    local keep = read and why and version == "1.1" and lower(h.connection or "") ~= "close" and not req.fresh
        and not r:leftover()
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
            drop_spools()
            res.error = inflate_error(self, zerr)
            return res
        end
        if n > 0 then
            local v, derr, head = out.result()
            if v == nil then
                drop_spools()
                if out.disk_failed() then
                    res.error = { kind = "transport", reason = "spool", sent = true, message = derr }
                    return res
                end
                if line_spool and out.lines_failed() then
                    -- (a row the NDJSON encoder could not write: the output's
                    -- failure, the answer itself was fine)
                    res.lines_error = self.mask(tostring(derr))
                else
                    res.decode_error = self.mask(tostring(derr))
                end
                res.snippet = printable(self.mask(head))
            else
                res.value = v
                if spool or line_spool then
                    res.rows, res.streamed = out.counted()
                    res.spool = spool
                end
                if line_spool then
                    res.lines, res.lines_extra = line_spool, out.extra()
                    if csv.cap and res.rows >= csv.cap then
                        res.times = out.times()
                    end
                end
            end
        else
            drop_spools()
        end
        return res
    end
    local raw = out.result()
    res.wire_bytes = #raw
    if out.failure() then
        res.bytes = #raw
        self.bytes = self.bytes + #raw
        res.decode_error, res.snippet = self.mask(out.failure()), printable(self.mask(raw))
        return res
    end
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
