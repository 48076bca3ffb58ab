--- The contract of a fleet backend, by its earlier name: the module is
-- `wolkvox.limits.shared`; this name stays for one release (see CHANGELOG).
-- @module wolkvox.state
return require "wolkvox.limits.shared"
