-- The layers point one way (issue #21): every `require` of the modules,
-- those inside functions included, maps to a graph with no cycle; error
-- kinds and reasons are data at the bottom, and the transport contract does
-- not load the transports (the factory, `wolkvox.transport.select`, does).

-- Module name of a path under lua/.
local function module_of(path)
    return (path:gsub("^lua/", ""):gsub("%.lua$", ""):gsub("/init$", ""):gsub("/", "."))
end

-- The modules of this tree and what each requires of it.
local function graph()
    local g = {}
    local p = io.popen("find lua -name '*.lua' | sort")
    for path in p:lines() do
        local f = assert(io.open(path, "rb"))
        local text = f:read("*a")
        f:close()
        local deps, name = {}, module_of(path)
        for _, pattern in ipairs {
            "require%s*%(?%s*[\"']([%w_%.]+)[\"']",      -- require "x", require("x")
            "pcall%(%s*require%s*,%s*[\"']([%w_%.]+)[\"']", -- pcall(require, "x")
        } do
            for dep in text:gmatch(pattern) do
                -- (A module's own name comes up in its usage comment.)
                if dep:match("^wolkvox%.") and dep ~= name then
                    deps[dep] = true
                end
            end
        end
        g[name] = deps
    end
    p:close()
    return g
end

-- The strongly connected components of more than one module (or a module
-- that requires itself): Tarjan's algorithm.
local function cycles(g)
    local index, low, on, stack, n, found = {}, {}, {}, {}, 0, {}
    local function visit(v)
        n = n + 1
        index[v], low[v] = n, n
        stack[#stack + 1], on[v] = v, true
        for w in pairs(g[v]) do
            if g[w] then
                if not index[w] then
                    visit(w)
                    low[v] = math.min(low[v], low[w])
                elseif on[w] then
                    low[v] = math.min(low[v], index[w])
                end
            end
        end
        if low[v] == index[v] then
            local comp = {}
            repeat
                local w = table.remove(stack)
                on[w] = nil
                comp[#comp + 1] = w
            until w == v
            if #comp > 1 or g[v][v] then
                table.sort(comp)
                found[#found + 1] = table.concat(comp, " ")
            end
        end
    end
    local names = {}
    for k in pairs(g) do
        names[#names + 1] = k
    end
    table.sort(names)
    for _, v in ipairs(names) do
        if not index[v] then
            visit(v)
        end
    end
    return found
end

describe("the layers", function()
    local g = graph()

    it("sees every module and its requires", function()
        assert.is_truthy(g["wolkvox.job.export"])
        assert.is_true(g["wolkvox.job.export"]["wolkvox.out.file"])
        assert.is_true(g["wolkvox.transport.select"]["wolkvox.transport.ngx"])
    end)

    it("have no require cycle", function()
        assert.same({}, cycles(g))
    end)

    it("require modules by name only (a computed name would hide an edge from the check above)", function()
        local computed = {}
        local p = io.popen("find lua -name '*.lua' | sort")
        for path in p:lines() do
            local f = assert(io.open(path, "rb"))
            local text = f:read("*a")
            f:close()
            local n = 0
            for first in text:gmatch("require%s*%(%s*(%S)") do
                if first ~= '"' and first ~= "'" then
                    n = n + 1
                end
            end
            if n > 0 then
                computed[#computed + 1] = path
            end
        end
        p:close()
        assert.same({}, computed)
    end)

    it("finds a cycle when there is one (the check itself)", function()
        local fake = { a = { b = true }, b = { c = true }, c = { a = true }, d = { a = true } }
        assert.same({ "a b c" }, cycles(fake))
    end)

    it("keep error kinds at the bottom: errors requires nothing of ours, retry requires errors", function()
        assert.same({}, g["wolkvox.errors"])
        assert.is_true(g["wolkvox.call.retry"]["wolkvox.errors"])
        for dep in pairs(g["wolkvox.transport"]) do
            assert.is_nil(dep:match("^wolkvox%.transport%."), "the contract loads " .. dep)
        end
    end)
end)
