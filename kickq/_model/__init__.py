"""kickq's pure model: jobs, their lifecycle decisions, options, retries, schedules, cron, JSON,
the clock, ids and errors. Nothing here does I/O.
"""
