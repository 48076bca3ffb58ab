--- gzip and deflate bodies for the cosocket transport, through zlib by the
-- LuaJIT FFI (nginx has no Lua zlib of its own; libcurl does this for the
-- C transport).  Output is capped as it grows.
-- @module wolkvox.inflate

local ffi = require "ffi"

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

--- Inflate gzip or zlib data (the header tells which).
-- @return the text, or nil and "too_large" or a message
function M.inflate(data, max_bytes)
    local z, err = lib()
    if not z then
        return nil, err
    end
    local strm = ffi.new("wolkvox_z_stream")
    -- 15 + 32: the largest window, gzip or zlib header detected.
    if z.inflateInit2_(strm, 15 + 32, z.zlibVersion(), ffi.sizeof(strm)) ~= Z_OK then
        return nil, "inflateInit2 failed"
    end
    local input = ffi.cast("const unsigned char *", data)
    strm.next_in, strm.avail_in = input, #data
    local out = ffi.new("unsigned char[?]", CHUNK)
    local parts, total = {}, 0
    local result, message
    while true do
        strm.next_out, strm.avail_out = out, CHUNK
        local rc = z.inflate(strm, 0)
        local got = CHUNK - strm.avail_out
        if got > 0 then
            total = total + got
            if total > max_bytes then
                result, message = nil, "too_large"
                break
            end
            parts[#parts + 1] = ffi.string(out, got)
        end
        if rc == Z_STREAM_END then
            result = table.concat(parts)
            break
        elseif rc ~= Z_OK and not (rc == Z_BUF_ERROR and strm.avail_in > 0) then
            result, message = nil, "bad compressed data" .. (strm.msg ~= nil and (": " .. ffi.string(strm.msg)) or "")
            break
        elseif strm.avail_in == 0 and got == 0 then
            result, message = nil, "compressed data cut short"
            break
        end
    end
    z.inflateEnd(strm)
    return result, message
end

return M
