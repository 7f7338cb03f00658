"""The claim rotation: which names a worker's next claim asks for (pure, no Redis needed)."""

from __future__ import annotations

import pytest

from kickq._rotation import ClaimRotation


def test_one_group_rotates_its_names_so_none_is_always_last() -> None:
    """On a single server every claim asks for every name, each name first in turn."""
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


def test_a_woken_group_goes_next() -> None:
    """A wake message for a name puts its group first, once."""
    rotation = ClaimRotation([("a",), ("b",), ("c",)])
    rotation.woken("c")
    assert rotation.next_claim() == ("c",)
    assert rotation.next_claim() == ("b",)  # then the turns go on


def test_a_single_group_never_looks_elsewhere() -> None:
    """With one group, a claim that left slots free means there is nothing more to claim."""
    rotation = ClaimRotation([("a", "b")])
    rotation.woken("a")
    assert rotation.more_elsewhere(found_any=False) is False


def test_other_groups_are_tried_until_each_came_up_empty() -> None:
    """After claims that left slots free, the other groups are tried until every group has
    come up empty once in a row; finding jobs, or a wake message, starts the count again."""
    rotation = ClaimRotation([("a",), ("b",), ("c",)])
    assert rotation.more_elsewhere(found_any=False) is True
    assert rotation.more_elsewhere(found_any=False) is True
    assert rotation.more_elsewhere(found_any=False) is False
    rotation.woken("b")
    assert rotation.more_elsewhere(found_any=False) is True
    assert rotation.next_claim() == ("b",)
    assert rotation.more_elsewhere(found_any=True) is True


def test_an_empty_rotation_is_refused() -> None:
    """A worker always serves at least one name."""
    with pytest.raises(ValueError):
        ClaimRotation([])
    with pytest.raises(ValueError):
        ClaimRotation([()])
