"""kickq.testing as a pytest plugin: sample test files run by pytest in a subprocess (pytester),
in a directory of their own, as an application's test suite would use it."""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys

import pytest
import redis

import kickq._redis.embedded
import kickq.testing

pytest_plugins = ["pytester"]

EXAMPLE = pathlib.Path(__file__).parent.parent / "examples" / "testing"

CONFTEST = """
pytest_plugins = ["kickq.testing"]
"""

SAMPLE = """
import contextlib
import json
import pathlib
import threading

import pytest
from freezegun import freeze_time

import kickq
import kickq.testing

SEEN = {}


def test_env_points_kickq_at_the_private_redis(kickq_env, kickq_redis):
    settings = kickq.config()
    assert settings["redis_url"] == kickq_redis.url == kickq_env.redis_url
    assert kickq_redis.url.startswith("unix://")
    assert settings["redis_namespace"] == kickq_env.namespace
    job = kickq.create("hello", {"x": 1}).result(5)
    assert kickq.get(job.id).result(5).data == {"x": 1}
    client = kickq_redis.client()
    keys = client.keys("*")
    assert keys and all(key.startswith(kickq_env.namespace + ":") for key in keys)
    server = {
        "directory": str(kickq_redis.directory),
        "pid": client.info("server")["process_id"],
        "port": client.config_get("port")["port"],
    }
    pathlib.Path("server.json").write_text(json.dumps(server))


def test_drain_runs_the_queued_jobs(kickq_env):
    ran = []
    kickq.process("email", lambda job, data: ran.append(data) or "sent", concurrent_jobs=3)
    futures = [kickq.create("email", i) for i in range(10)]
    kickq.testing.drain(timeout=10)
    assert sorted(ran) == list(range(10))
    assert {kickq.get(f.result(5).id).result(5).state for f in futures} == {"success"}


def test_drain_under_a_frozen_clock(kickq_env):
    ran = []
    with freeze_time("2030-01-01 09:00:00") as frozen:
        kickq.process("remind", lambda job, data: ran.append(data))
        job = kickq.create("remind", "later", delay=60).result(5)
        kickq.testing.drain(timeout=10)
        assert ran == [] and kickq.get(job.id).result(5).state == "delayed"
        frozen.tick(61)
        kickq.testing.drain(timeout=10)
    assert ran == ["later"]


def test_drain_timeout_raises(kickq_env):
    release = threading.Event()
    kickq.process("stuck", lambda job, data: release.wait(10))
    kickq.create("stuck").result(5)
    try:
        with pytest.raises(TimeoutError, match="1 processing"):
            kickq.testing.drain(timeout=0.5)
    finally:
        release.set()


def test_first_of_two(kickq_env):
    job = kickq.create("mine").result(5)
    SEEN["first"] = (kickq_env.namespace, job.id)


def test_second_of_two(kickq_env, kickq_redis):
    namespace, job_id = SEEN["first"]
    assert kickq_env.namespace != namespace
    with pytest.raises(kickq.JobNotFound):
        kickq.get(job_id).result(5)
    assert kickq_redis.client().keys(namespace + ":*") == []
"""


def test_the_plugin_gives_each_test_a_private_namespace_and_drains(
    pytester: pytest.Pytester,
) -> None:
    """With `pytest_plugins = ["kickq.testing"]` in a conftest: kickq_env points kickq at the
    session's private Redis (a unix socket, no TCP port) with a namespace per test, whose keys
    are gone after it; drain() runs queued jobs, works under a frozen clock, and times out;
    the server is stopped and its directory removed at the end of the session."""
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_sample=SAMPLE)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-v", timeout=120)
    result.assert_outcomes(passed=6)
    assert "warning" not in result.stdout.str().lower()
    server = json.loads((pytester.path / "server.json").read_text())
    assert server["port"] == "0"
    assert not pathlib.Path(server["directory"]).exists()
    with pytest.raises(ProcessLookupError):
        os.kill(server["pid"], 0)


PARALLEL = """
import contextlib
import json
import os
import pathlib

import pytest

import kickq
import kickq.testing


@pytest.mark.parametrize("n", range(4))
def test_one_of_many(kickq_env, kickq_redis, n):
    ran = []
    kickq.process("job", lambda job, data: ran.append(data))
    kickq.create("job", n)
    kickq.testing.drain(timeout=10)
    assert ran == [n]
    seen = {
        "worker": os.environ.get("PYTEST_XDIST_WORKER"),
        "server": kickq_redis.client().info("server")["process_id"],
        "namespace": kickq_env.namespace,
    }
    pathlib.Path(f"seen-{seen['worker']}-{n}.json").write_text(json.dumps(seen))
"""


def test_under_pytest_xdist_each_worker_process_has_its_own_server(
    pytester: pytest.Pytester,
) -> None:
    """With pytest-xdist, each worker process starts a private server of its own and every
    test still gets a namespace of its own (`--dist each`: every test runs in both workers,
    at the same time, with the same job name)."""
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_parallel=PARALLEL)
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "-n", "2", "--dist", "each", timeout=120
    )
    result.assert_outcomes(passed=8)
    seen = [json.loads(path.read_text()) for path in pytester.path.glob("seen-*.json")]
    assert len(seen) == 8
    assert len({s["namespace"] for s in seen}) == 8
    servers = {s["worker"]: s["server"] for s in seen}
    assert sorted(servers) == ["gw0", "gw1"]
    assert all(servers[s["worker"]] == s["server"] for s in seen)  # one server per worker
    assert servers["gw0"] != servers["gw1"]  # and none shared


def test_the_plugin_is_opt_in(pytester: pytest.Pytester) -> None:
    """Installing kickq adds no fixture to a test run: only pytest_plugins loads them."""
    pytester.makepyfile(test_alone="def test_env(kickq_env):\n    pass\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", timeout=120)
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*fixture 'kickq_env' not found*"])


def test_the_example_test_suite_passes(pytester: pytest.Pytester) -> None:
    """examples/testing/ (an application, its conftest.py and its tests) passes."""
    shutil.copytree(EXAMPLE, pytester.path, dirs_exist_ok=True)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-v", timeout=120)
    result.assert_outcomes(passed=3)
    assert "warning" not in result.stdout.str().lower()


def test_importing_kickq_imports_no_pytest() -> None:
    """pytest stays optional: `import kickq` loads neither pytest nor kickq.testing."""
    code = "import sys, kickq; print('pytest' in sys.modules, 'kickq.testing' in sys.modules)"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.split() == ["False", "False"]


def test_public_names_of_kickq_testing() -> None:
    """kickq.testing exports the fixtures, drain and the types the fixtures give, each with a
    docstring that says what it is."""
    assert set(kickq.testing.__all__) == {
        "KickqEnv",
        "PrivateRedis",
        "drain",
        "kickq_env",
        "kickq_redis",
    }
    for name in kickq.testing.__all__:
        assert (getattr(kickq.testing, name).__doc__ or "").strip(), name


def test_private_redis_starts_and_stops(tmp_path: pathlib.Path) -> None:
    """A PrivateRedis answers on its unix socket only, and stop() ends it and removes its
    files; forget() deletes one namespace's keys and no other's."""
    server = kickq.testing.PrivateRedis().start()
    try:
        client = server.client()
        assert client.ping()
        assert client.config_get("port")["port"] == "0"
        client.mset({"ns1:a": "1", "ns1:b": "2", "ns2:a": "3"})
        assert server.forget("ns1") == 2
        assert client.keys("*") == ["ns2:a"]
        client.close()
    finally:
        server.stop()
    assert not server.directory.exists()


def test_fresh_env_resets_kickq_before_and_after(tmp_path: pathlib.Path) -> None:
    """kickq_env's set-up forgets what an earlier test configured and its workers; its
    teardown resets kickq and deletes the namespace's keys."""
    kickq.config(job_flags={"x": {"retry": True}})
    server = kickq.testing.PrivateRedis().start()
    try:
        with kickq.testing._fresh_env(server) as env:
            settings = kickq.config()
            assert settings["job_flags"] == {}
            assert settings["redis_namespace"] == env.namespace
            assert settings["redis_url"] == server.url == env.redis_url
            kickq.create("x").result(5)
            assert server.client().keys(f"{env.namespace}:*")
        assert kickq.config()["redis_url"] is None
        assert server.client().keys("*") == []
    finally:
        server.stop()


def test_a_server_that_fails_to_start_says_where_its_log_is(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A redis-server that exits at once fails start() with RedisUnavailable naming its status
    and its log, whose directory is kept to be read."""
    monkeypatch.setattr(kickq._redis.embedded, "server_binary", lambda: shutil.which("false"))
    server = kickq.testing.PrivateRedis()
    try:
        with pytest.raises(kickq.RedisUnavailable, match=r"exited with 1; see .*redis\.log"):
            server.start()
        assert server.directory.exists()
    finally:
        server.stop()
    assert not server.directory.exists()


GUARDED = """
import pytest

import kickq


def test_forgot_kickq_env():
    kickq.create("hello").result(5)


def test_points_kickq_at_a_real_server_inside_kickq_env(kickq_env):
    kickq.config(redis_url="{url}")  # an application's own settings
    kickq.create("hello").result(5)


def test_the_private_server_by_hand_is_allowed(kickq_redis):
    kickq.reset()
    kickq.config(redis_url=kickq_redis.url, redis_namespace="by-hand")
    try:
        assert kickq.create("hello").result(5).name == "hello"
    finally:
        kickq.reset()
        kickq_redis.forget("by-hand")


@pytest.mark.kickq_allow_real_redis
def test_marked_may_use_a_real_server():
    kickq.reset()
    kickq.config(redis_url="{url}", redis_namespace="{namespace}")
    assert kickq.create("marked").result(5).name == "marked"


def test_after_a_marked_test_the_guard_is_back():
    kickq.config(redis_url="{url}", redis_namespace="after")
    kickq.create("after").result(5)
"""


def test_the_plugin_refuses_a_real_redis_to_a_test_without_kickq_env(
    pytester: pytest.Pytester, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In a session with the plugin, kickq connects only to the private server: a test that
    forgets kickq_env, or points kickq elsewhere, fails with an error saying how to fix it
    (and writes nothing); the kickq_allow_real_redis marker lets one test through."""
    namespace = "guarded"
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_guard=GUARDED.format(url=redis_url, namespace=namespace))
    monkeypatch.setenv("KICKQ_REDIS_URL", redis_url)  # the "real" server, as a developer's
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-v", timeout=120)
    result.assert_outcomes(passed=2, failed=3)
    output = result.stdout.str()
    for name in ("forgot_kickq_env", "inside_kickq_env", "guard_is_back"):
        assert re.search(rf"::test_\w*{name} FAILED", output), name
    assert "ConfigError: kickq.testing refused to connect kickq to " in output
    assert "Take the kickq_env fixture" in output
    assert "@pytest.mark.kickq_allow_real_redis" in output
    with contextlib.closing(redis.Redis.from_url(redis_url, decode_responses=True)) as client:
        keys = client.keys("*")
    assert keys and all(namespace in key for key in keys)  # the marked test's only


def test_the_guard_is_off_with_the_ini_option(
    pytester: pytest.Pytester, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`kickq_allow_real_redis = true` in the pytest configuration turns the guard off."""
    pytester.makeconftest(CONFTEST)
    pytester.makeini("[pytest]\nkickq_allow_real_redis = true\n")
    pytester.makepyfile(
        test_free="import kickq\n\ndef test_real():\n    kickq.create('free').result(5)\n"
    )
    monkeypatch.setenv("KICKQ_REDIS_URL", redis_url)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", timeout=120)
    result.assert_outcomes(passed=1)
