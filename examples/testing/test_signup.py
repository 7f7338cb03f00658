"""Testing an application that uses kickq (signup.py) with kickq's pytest plugin, which
conftest.py loads.

    .venv/bin/python -m pytest examples/testing -p no:cacheprovider -o addopts=""

Each test gets kickq reset and pointed at a private redis-server (one per test session) with a
namespace of its own (`kickq_env`); the application's workers run in the test's process, and
`kickq.testing.drain()` waits until they have nothing left to do. freezegun moves the clock for
the job that is due a day later.
"""

from __future__ import annotations

import datetime

import pytest
import signup
from freezegun import freeze_time

import kickq
import kickq.testing


@pytest.fixture
def workers(kickq_env: kickq.testing.KickqEnv) -> list[kickq.Worker]:
    """The application's workers, started once kickq_env has configured kickq."""
    signup.OUTBOX.clear()
    return signup.start_workers()


def test_signup_sends_the_welcome_email(workers: list[kickq.Worker]) -> None:
    """The welcome email has gone out once drain() returns; the reminder has not."""
    job = signup.signup("ada@example.com").result(5)
    kickq.testing.drain(timeout=10)
    assert signup.OUTBOX == [("ada@example.com", "welcome")]
    assert kickq.get(job.id).result(5).state == "success"
    assert kickq.jobs(name="email", state="success").count().result(5) == 1
    assert kickq.jobs(name="email", state="delayed").count().result(5) == 1  # the reminder


def test_the_reminder_goes_out_a_day_later(workers: list[kickq.Worker]) -> None:
    """With the clock frozen, the reminder waits until the test moves the clock a day on."""
    with freeze_time("2030-01-01 09:00:00") as frozen:
        signup.signup("ada@example.com")
        kickq.testing.drain(timeout=10)
        assert [template for _, template in signup.OUTBOX] == ["welcome"]
        frozen.tick(datetime.timedelta(seconds=signup.REMINDER_DELAY - 60))
        kickq.testing.drain(timeout=10)
        assert [template for _, template in signup.OUTBOX] == ["welcome"]
        frozen.tick(datetime.timedelta(seconds=61))
        kickq.testing.drain(timeout=10)
    assert [template for _, template in signup.OUTBOX] == ["welcome", "reminder"]


def test_each_test_starts_from_an_empty_namespace(
    kickq_env: kickq.testing.KickqEnv, kickq_redis: kickq.testing.PrivateRedis
) -> None:
    """Nothing the tests above created is in this test's namespace."""
    assert kickq.config()["redis_namespace"] == kickq_env.namespace
    assert kickq_redis.client().keys(f"{kickq_env.namespace}:*") == []
