"""The threads of a kickq process: the runtime that owns them, the dispatcher, the timer, the
workers and their runs, the waits of hotjobs, and what runs handlers (pool, event loop, middleware).

The engine decides nothing about a job's life itself (that is _model.lifecycle) and speaks to Redis
only through _redis.
"""
