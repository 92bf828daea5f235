"""How many replicas a write must reach (jobs/replication.py): set, or learnt from the master."""

from __future__ import annotations

import pytest

from visionq.jobs.replication import REFRESH_EVERY, ReplicaPolicy, Unconfirmed, check


def test_a_set_number_is_kept_and_the_master_is_never_asked() -> None:
    policy = ReplicaPolicy(2)
    assert not policy.due()
    assert policy.required == 2


def test_unset_it_is_one_once_the_master_has_had_a_replica_and_stays_so() -> None:
    policy = ReplicaPolicy(None)
    assert policy.due()
    policy.note({"role": "master", "connected_slaves": 0})
    assert policy.required == 0
    assert not policy.due(), "read again only after a while"
    policy.note({"role": "master", "connected_slaves": 2})
    assert policy.required == 1
    policy.note({"role": "master", "connected_slaves": 0})
    assert policy.required == 1, "a replica that went away is a reason to refuse, not to stop waiting"
    assert not policy.due()


def test_a_read_can_be_made_ahead_of_its_time() -> None:
    policy = ReplicaPolicy(None)
    policy.note({"role": "master", "connected_slaves": 0})
    assert not policy.due(ahead=1.0)
    assert policy.due(ahead=REFRESH_EVERY), "the worker's housekeeping reads it before a completion would"
    assert not ReplicaPolicy(1).due(ahead=REFRESH_EVERY), "a set number is never read"


def test_zero_turns_the_wait_off() -> None:
    assert ReplicaPolicy(0).required == 0


def test_fewer_acknowledgements_than_required_is_unconfirmed() -> None:
    check(1, 1, 1.0)
    with pytest.raises(Unconfirmed, match="0 of the 1 replicas"):
        check(0, 1, 1.0)
