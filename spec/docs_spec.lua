-- The README stays true to the code: its endpoint table is the registry's.
describe("README", function()
    it("has the registry's endpoint table", function()
        local p = io.popen("env -u LD_PRELOAD lua5.4 tools/gen-readme.lua --check 2>&1; echo status=$?")
        local out = p:read("*a")
        p:close()
        assert.matches("status=0", out, 1, true)
    end)
end)
