"""The application's test configuration: kickq's pytest plugin gives its tests `kickq_redis`
(a private redis-server for the session) and `kickq_env` (kickq pointed at it, with a fresh
namespace for each test)."""

pytest_plugins = ["kickq.testing"]
