--- The writers of the export formats, by their public name: the module is
-- `wolkvox.out.formats` (where rows leave the process); this name stays for
-- the scripts that require it.
-- @module wolkvox.export
return require "wolkvox.out.formats"
