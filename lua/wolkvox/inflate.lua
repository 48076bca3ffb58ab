--- gzip and deflate bodies for the cosocket transport, through zlib by the
-- LuaJIT FFI (nginx has no Lua zlib of its own; libcurl does this for the
-- C transport).  Output is capped as it grows.
-- @module wolkvox.inflate

local ffi = require "ffi"

local setmetatable = setmetatable

local M = {}

ffi.cdef [[
typedef struct wolkvox_z_stream {
    const unsigned char *next_in;
    unsigned int avail_in;
    unsigned long total_in;
    unsigned char *next_out;
    unsigned int avail_out;
    unsigned long total_out;
    const char *msg;
    void *state;
    void *zalloc;
    void *zfree;
    void *opaque;
    int data_type;
    unsigned long adler;
    unsigned long reserved;
} wolkvox_z_stream;
int inflateInit2_(wolkvox_z_stream *strm, int windowBits, const char *version, int stream_size);
int inflate(wolkvox_z_stream *strm, int flush);
int inflateEnd(wolkvox_z_stream *strm);
const char *zlibVersion(void);
]]

local zlib
local function lib()
    if not zlib then
        local ok, z = pcall(ffi.load, "z")
        if not ok then
            ok, z = pcall(ffi.load, "libz.so.1")
        end
        if not ok then
            return nil, "zlib is not available: " .. tostring(z)
        end
        zlib = z
    end
    return zlib
end

local Z_OK, Z_STREAM_END, Z_BUF_ERROR = 0, 1, -5
local CHUNK = 65536

local Inflater = {}
Inflater.__index = Inflater

--- An inflater fed the compressed answer in pieces as they arrive: each
-- `push(data)` gives the text it frees (a list of strings, maybe empty), or
-- nil and "too_large" (past `max_bytes` of text) or a message; `finish()`
-- says whether the stream ended whole (true, or nil and a message).
-- gzip or zlib, the header tells which.
-- @return the inflater, or nil and a message
function M.stream(max_bytes)
    local z, err = lib()
    if not z then
        return nil, err
    end
    local strm = ffi.new("wolkvox_z_stream")
    -- 15 + 32: the largest window, gzip or zlib header detected.
    if z.inflateInit2_(strm, 15 + 32, z.zlibVersion(), ffi.sizeof(strm)) ~= Z_OK then
        return nil, "inflateInit2 failed"
    end
    -- zlib's own memory is let go with the stream, however it ends.
    ffi.gc(strm, function(s) z.inflateEnd(s) end)
    return setmetatable({ z = z, strm = strm, out = ffi.new("unsigned char[?]", CHUNK), total = 0,
        max_bytes = max_bytes, ended = false }, Inflater)
end

-- Run inflate once into the output buffer: what came out is appended to
-- `parts`; returns zlib's code, or nil and the failure (kept).
function Inflater:step(parts)
    local strm, out = self.strm, self.out
    strm.next_out, strm.avail_out = out, CHUNK
    local rc = self.z.inflate(strm, 0)
    local got = CHUNK - strm.avail_out
    if got > 0 then
        self.total = self.total + got
        if self.total > self.max_bytes then
            self.failed = "too_large"
            return nil, self.failed
        end
        parts[#parts + 1] = ffi.string(out, got)
    end
    if rc == Z_STREAM_END then
        self.ended = true
    end
    return rc, got
end

function Inflater:push(data)
    if self.failed then
        return nil, self.failed
    end
    local strm = self.strm
    local parts = {}
    -- The input must outlive the calls that read it.
    self.input = data
    strm.next_in, strm.avail_in = ffi.cast("const unsigned char *", data), #data
    while strm.avail_in > 0 and not self.ended do
        local rc, got = self:step(parts)
        if not rc then
            return nil, got
        end
        if rc ~= Z_OK and rc ~= Z_STREAM_END and not (rc == Z_BUF_ERROR and strm.avail_in > 0) then
            self.failed = "bad compressed data" .. (strm.msg ~= nil and (": " .. ffi.string(strm.msg)) or "")
            return nil, self.failed
        elseif got == 0 and rc == Z_BUF_ERROR then
            break
        end
    end
    -- What zlib keeps in its window may still come out.
    while not self.ended and strm.avail_in == 0 do
        local rc, got = self:step(parts)
        if not rc then
            return nil, got
        end
        if got == 0 or rc ~= Z_OK then
            break
        end
    end
    self.input = nil
    return parts
end

function Inflater:finish()
    if self.failed then
        return nil, self.failed
    end
    if not self.ended then
        return nil, "compressed data cut short"
    end
    return true
end

--- Inflate gzip or zlib data (the header tells which) in one piece.
-- @return the text, or nil and "too_large" or a message
function M.inflate(data, max_bytes)
    local inf, err = M.stream(max_bytes)
    if not inf then
        return nil, err
    end
    local parts, perr = inf:push(data)
    if not parts then
        return nil, perr
    end
    local ok, ferr = inf:finish()
    if not ok then
        return nil, ferr
    end
    return table.concat(parts)
end

return M
