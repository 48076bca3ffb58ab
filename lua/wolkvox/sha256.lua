--- SHA-256 in Lua, for LuaJIT hosts without the C core (an nginx that has
-- only the Lua files): token and server fingerprints must be the same
-- whichever transport computes them.  Uses LuaJIT's `bit` library; where the
-- C core is loaded, `wolkvox.transport` uses its `sha256` instead.
-- @module wolkvox.sha256

local bit = require "bit"

local band, bor, bxor, bnot, rshift, lshift, ror, tobit =
    bit.band, bit.bor, bit.bxor, bit.bnot, bit.rshift, bit.lshift, bit.ror, bit.tobit
local byte, char, format, rep, concat = string.byte, string.char, string.format, string.rep, table.concat

local K = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
}

-- The message padded to a multiple of 64 bytes, its bit length at the end.
local function pad(s)
    local n = #s
    local zeros = (55 - n) % 64
    local bits = n * 8
    local len = {}
    for i = 8, 1, -1 do
        len[i] = char(bits % 256)
        bits = math.floor(bits / 256)
    end
    return s .. "\128" .. rep("\0", zeros) .. concat(len)
end

local function block(s, at, H)
    local w = {}
    for i = 0, 15 do
        local a, b, c, d = byte(s, at + i * 4, at + i * 4 + 3)
        w[i] = tobit(bor(lshift(a, 24), lshift(b, 16), lshift(c, 8), d))
    end
    for i = 16, 63 do
        local x, y = w[i - 15], w[i - 2]
        local s0 = bxor(ror(x, 7), ror(x, 18), rshift(x, 3))
        local s1 = bxor(ror(y, 17), ror(y, 19), rshift(y, 10))
        w[i] = tobit(w[i - 16] + s0 + w[i - 7] + s1)
    end
    local a, b, c, d, e, f, g, h = H[1], H[2], H[3], H[4], H[5], H[6], H[7], H[8]
    for i = 0, 63 do
        local S1 = bxor(ror(e, 6), ror(e, 11), ror(e, 25))
        local ch = bxor(band(e, f), band(bnot(e), g))
        local t1 = tobit(h + S1 + ch + K[i + 1] + w[i])
        local S0 = bxor(ror(a, 2), ror(a, 13), ror(a, 22))
        local maj = bxor(band(a, b), band(a, c), band(b, c))
        local t2 = tobit(S0 + maj)
        h, g, f, e, d, c, b, a = g, f, e, tobit(d + t1), c, b, a, tobit(t1 + t2)
    end
    H[1], H[2], H[3], H[4] = tobit(H[1] + a), tobit(H[2] + b), tobit(H[3] + c), tobit(H[4] + d)
    H[5], H[6], H[7], H[8] = tobit(H[5] + e), tobit(H[6] + f), tobit(H[7] + g), tobit(H[8] + h)
end

--- The SHA-256 of `s` as 64 lowercase hex digits.
return function(s)
    local H = { tobit(0x6a09e667), tobit(0xbb67ae85), tobit(0x3c6ef372), tobit(0xa54ff53a),
        tobit(0x510e527f), tobit(0x9b05688c), tobit(0x1f83d9ab), tobit(0x5be0cd19) }
    local m = pad(s)
    for at = 1, #m, 64 do
        block(m, at, H)
    end
    local out = {}
    for i = 1, 8 do
        out[i] = format("%08x", H[i] % 0x100000000)
    end
    return concat(out)
end
