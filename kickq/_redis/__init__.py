"""Everything that speaks Redis: which server, its outages, the key schema, the record layout, the
stores whose methods are the Lua scripts (scripts/*.lua), and the one pub/sub connection.

The only subpackage that imports redis-py (kickq.testing and the CLI's reachability check aside).
"""
