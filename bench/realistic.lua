--- bench/realistic.lua: a cdr_1 answer shaped like real call detail, for
-- the benchmarks (never for the specs).
--
-- The fake server's rows repeat most of their strings (names are
-- "agent_name 12", descriptions come from 40 values); real call detail does
-- not: every call has its own conn_id, telephone, customer id, customer
-- name and time.  This makes such an answer: ROWS rows (59,000 by default)
-- of the registry's 20 cdr_1 fields, in time order over one day, every
-- value a string as the API sends it ("00:03:21" durations, "-" for
-- nothing, Spanish and Portuguese names with their accents), in the API's
-- envelope {"code":200,"error":null,"msg":"...","data":[...]}.  About 28 MB
-- for 59,000 rows; the same text for the same options (a seeded generator),
-- made in well under a second.
--
--   local realistic = dofile("bench/realistic.lua")
--   local text = realistic.answer { rows = 59000, seed = 1, day = "2026-01-05" }
--
-- Options: `rows`, `seed`, `day` (YYYY-MM-DD), `escaped` (true: every
-- non-ASCII character as a \uXXXX escape, as PHP's json_encode writes it
-- by default; false, the default: raw UTF-8, as JSON_UNESCAPED_UNICODE).
-- The customer's name is in `comment` (cdr_1 has no field of its own for
-- it), beside a short note or alone.
local M = {}

local floor, format, concat = math.floor, string.format, table.concat

-- Park-Miller: exact in doubles (LuaJIT) and integers (5.4) alike.
local function prng(seed)
    local x = (floor(seed) % 2147483646) + 1
    return function(n)
        x = x * 16807 % 2147483647
        return x % n
    end
end

local GIVEN = {
    "José", "María", "Juan Pablo", "Andrés", "Sofía", "Camila", "Valentina", "Sebastián", "Mateo",
    "Isabella", "Martín", "Lucía", "Nicolás", "Daniela", "Alejandro", "Mariana", "Julián", "Natalia",
    "Tomás", "Ximena", "Iván", "Verónica", "Ramón", "Inés", "Ángela", "Óscar", "Raúl", "Héctor",
    "João", "Conceição", "Gonçalo", "Estêvão", "Luíza", "Antônio", "Sebastião", "Fátima", "Júlia",
    "Vitória", "Lourenço", "Assunção", "Cristóvão", "Simão", "Leonor", "Beatriz", "Rodrigo", "Paula",
}
local FAMILY = {
    "González", "Rodríguez", "Gómez", "Fernández", "López", "Díaz", "Martínez", "Pérez", "García",
    "Sánchez", "Ramírez", "Torres", "Muñoz", "Jiménez", "Hernández", "Ruiz", "Álvarez", "Castaño",
    "Peña", "Ordóñez", "Agudelo", "Restrepo", "Zuluaga", "Ibáñez", "Núñez", "Cárdenas", "Echeverría",
    "Conceição", "Gonçalves", "Araújo", "Magalhães", "Simões", "Guimarães", "Brandão", "Assunção",
    "Falcão", "Loureiro", "Patrício", "Sousa", "Bragança", "Antunes", "Calçada", "Leão", "Carvalho",
}
local ACTS = {
    { "1", "Venta efectiva" }, { "2", "No contesta" }, { "3", "Volver a llamar" },
    { "4", "Información general" }, { "5", "Reclamación" }, { "6", "Número equivocado" },
    { "7", "Cliente no interesado" }, { "8", "Promesa de pago" }, { "9", "Transferencia a supervisión" },
    { "10", "Solicitud de baja" }, { "11", "Actualización de datos" }, { "12", "Soporte técnico resuelto" },
    { "13", "Atendimento concluído" }, { "14", "Reagendamento" }, { "15", "Buzón de voz" },
}
local SKILLS = {
    "Ventas Bogotá", "Soporte Técnico", "Cobranzas", "Atención al Cliente", "Retención",
    "Facturación", "Atendimento São Paulo", "Cobrança Recife", "Posventa Medellín", "Back Office",
    "Televentas Cali", "Fidelización",
}
local NOTES = {
    "pide factura electrónica", "llamar después de las 3 p. m.", "dirección actualizada",
    "quer falar com o gerente", "reclamo por cobro doble", "solicita información de planes",
    "cliente molesto, escaló", "pagará el viernes", "sem cobertura na região", "cambio de titular",
}
local TYPES = { "inbound", "outbound", "inbound", "inbound", "preview", "outbound" }
local HANG = { "agent", "customer", "customer", "system" }

-- Every non-ASCII character of a UTF-8 string as a \uXXXX escape (all of
-- these names are in the Basic Multilingual Plane).
local function escape_utf8(s)
    return (s:gsub("[\xC2-\xDF][\x80-\xBF]", function(c)
        local a, b = c:byte(1, 2)
        return format("\\u%04x", (a - 0xC0) * 64 + (b - 0x80))
    end):gsub("[\xE0-\xEF][\x80-\xBF][\x80-\xBF]", function(c)
        local a, b, d = c:byte(1, 3)
        return format("\\u%04x", (a - 0xE0) * 4096 + (b - 0x80) * 64 + (d - 0x80))
    end))
end

local function hms(s)
    return format("%02d:%02d:%02d", floor(s / 3600), floor(s % 3600 / 60), s % 60)
end

-- The 20 fields in the registry's order (checked by M.fields()).
local ROW = '{"agent_name":"%s","date":"%s","destiny":"%s","telephone":"%s","cost":"%s",'
    .. '"time_seg":"%d","time_min":"%s","cod_act":"%s","description_cod_act":"%s","cod_act_2":"%s",'
    .. '"description_cod_act_2":"%s","type_interaction":"%s","customer_id":"%s","hang_up":"%s",'
    .. '"campaign_id":"%s","conn_id":"%s","skill_id":"%s","skill_name":"%s","agent_id":"%s","comment":"%s"}'

--- The field names of a row, in order.
function M.fields()
    local t = {}
    for k in ROW:gmatch('"([%w_]+)":') do
        t[#t + 1] = k
    end
    return t
end

--- The answer's JSON text (see the top of this file for `opts`).
function M.answer(opts)
    opts = opts or {}
    local rows, seed = opts.rows or 59000, opts.seed or 1
    local day = assert((opts.day or "2026-01-05"):match("^%d%d%d%d%-%d%d%-%d%d$"), "day: YYYY-MM-DD")
    local r = prng(seed)
    local esc = opts.escaped and escape_utf8 or function(s) return s end
    -- About 45 agents on shift: each with a name, an id and a skill.
    local agents = {}
    for i = 1, 45 do
        local name = GIVEN[r(#GIVEN) + 1] .. " " .. FAMILY[r(#FAMILY) + 1]
        agents[i] = { esc(name), tostring(1100 + i * 7), r(#SKILLS) + 1 }
    end
    local skills, acts, notes = {}, {}, {}
    for i, s in ipairs(SKILLS) do skills[i] = esc(s) end
    for i, a in ipairs(ACTS) do acts[i] = { a[1], esc(a[2]) } end
    for i, s in ipairs(NOTES) do notes[i] = esc(s) end
    local out = {}
    local conn = 1736000000000 + r(1000000)
    for n = 1, rows do
        -- In time order over the day: the n-th call starts in its own slot.
        local t = floor((n - 1 + r(1000) / 1000) * 86400 / rows)
        local when = day .. " " .. hms(t)
        local ag = agents[r(#agents) + 1]
        local secs = r(r(4) == 0 and 1800 or 420)
        local act = acts[r(#acts) + 1]
        local act2 = r(3) == 0 and acts[r(#acts) + 1] or nil
        local typ = TYPES[r(#TYPES) + 1]
        local customer = esc(GIVEN[r(#GIVEN) + 1] .. " " .. FAMILY[r(#FAMILY) + 1] .. " "
            .. FAMILY[r(#FAMILY) + 1])
        local comment = r(3) == 0 and customer .. " - " .. notes[r(#notes) + 1] or customer
        conn = conn + 1 + r(40)
        out[n] = format(ROW,
            ag[1], when,
            typ == "inbound" and "-" or format("60%d%07d", 1 + r(8), r(10000000)),
            format("57%d%08d", 300 + r(25), r(100000000)),
            typ == "inbound" and "0" or format("%d.%02d", r(900), r(100)),
            secs, hms(secs),
            act[1], act[2], act2 and act2[1] or "-", act2 and act2[2] or "-",
            typ, tostring(10000000 + r(1000000000)), HANG[r(#HANG) + 1],
            tostring(20 + r(9)), format("%d-%04d", conn, r(10000)),
            tostring(300 + ag[3]), skills[ag[3]], ag[2], comment)
    end
    return '{"code":200,"error":null,"msg":"' .. rows .. ' records found","data":[' .. concat(out, ",") .. "]}"
end

return M
