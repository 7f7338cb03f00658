"""The claim rotation: which names a worker's next claim asks for (pure, no Redis needed)."""

from __future__ import annotations

import pytest

from kickq._engine.rotation import MAX_NAMES, ClaimRotation


def test_one_group_rotates_its_names_so_none_is_always_last() -> None:
    """On a single server a claim asks for every ready name, each name first in turn."""
    rotation = ClaimRotation([("a", "b", "c")])
    assert [rotation.next_claim() for _ in range(4)] == [
        ("a", "b", "c"),
        ("b", "c", "a"),
        ("c", "a", "b"),
        ("a", "b", "c"),
    ]


def test_groups_take_turns_and_rotate_within() -> None:
    """On a cluster the groups take turns; within a group the names rotate too."""
    rotation = ClaimRotation([("a", "b"), ("c",)])
    assert [rotation.next_claim() for _ in range(4)] == [("a", "b"), ("c",), ("b", "a"), ("c",)]


def test_names_with_nothing_to_start_rest_until_a_wake() -> None:
    """A claim's idle names are not asked for again until a wake message names them: a claim
    costs nothing for names with no work."""
    rotation = ClaimRotation([("a", "b", "c")])
    assert rotation.next_claim() == ("a", "b", "c")
    rotation.claimed(["a", "c"])
    assert rotation.next_claim() == ("b",)
    rotation.claimed(["b"])
    assert not rotation.has_ready()
    assert rotation.next_claim() == ()
    rotation.woken("c")
    assert rotation.next_claim() == ("c",)


def test_a_wake_during_a_claim_keeps_its_name_ready() -> None:
    """A wake that comes while the claim asking for its name is on its way is not lost when the
    claim's reply (read before the job of the wake was saved) says the name was idle."""
    rotation = ClaimRotation([("a", "b")])
    assert rotation.next_claim() == ("a", "b")
    rotation.woken("a")  # the reply of that claim is not in yet
    rotation.claimed(["a", "b"])
    assert rotation.next_claim() == ("a",)


def test_idle_groups_are_skipped() -> None:
    """On a cluster only the groups with a ready name take turns."""
    rotation = ClaimRotation([("a",), ("b",), ("c",)])
    rotation.next_claim()
    rotation.claimed(["a"])
    rotation.next_claim()
    rotation.claimed(["b"])
    assert rotation.next_claim() == ("c",)
    rotation.claimed(["c"])
    rotation.woken("b")
    assert [rotation.next_claim(), rotation.next_claim()] == [("b",), ("b",)]


def test_wake_all_makes_every_name_ready() -> None:
    """After a reconnect (wake messages may have been missed) every name is asked for."""
    rotation = ClaimRotation([("a", "b")])
    rotation.next_claim()
    rotation.claimed(["a", "b"])
    rotation.wake_all()
    assert set(rotation.next_claim()) == {"a", "b"}


def test_a_claim_asks_for_a_bounded_number_of_names() -> None:
    """A worker serving many names asks for MAX_NAMES at most per claim, and every name gets
    its turn."""
    names = tuple(f"n{i}" for i in range(3 * MAX_NAMES + 5))
    rotation = ClaimRotation([names])
    asked: set[str] = set()
    while rotation.has_ready():
        claim = rotation.next_claim()
        assert 0 < len(claim) <= MAX_NAMES
        asked.update(claim)
        rotation.claimed(claim)
    assert asked == set(names)


def test_an_empty_rotation_is_refused() -> None:
    """A worker always serves at least one name."""
    with pytest.raises(ValueError):
        ClaimRotation([])
    with pytest.raises(ValueError):
        ClaimRotation([()])
