"""MicroBatcher: concurrent calls share one batch, and an error reaches only the call that caused it."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from triptych.apps.serve.batching import SIZES_KEPT, MicroBatcher


def double_all(items: list[int]) -> list[int]:
    if any(i < 0 for i in items):
        raise ValueError(f"negative item in {items}")
    return [2 * i for i in items]


def test_concurrent_calls_are_batched_and_get_their_own_results() -> None:
    gate = threading.Lock()
    batcher = MicroBatcher(double_all, gate, max_batch=8, wait_s=0.2)
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(batcher, range(8)))
    assert results == [2 * i for i in range(8)]
    assert max(batcher.batch_sizes) > 1, batcher.batch_sizes  # they really ran together
    assert sum(batcher.batch_sizes) == 8


def test_max_batch_is_respected() -> None:
    batcher = MicroBatcher(double_all, threading.Lock(), max_batch=3, wait_s=0.2)
    with ThreadPoolExecutor(10) as pool:
        assert list(pool.map(batcher, range(10))) == [2 * i for i in range(10)]
    assert max(batcher.batch_sizes) <= 3


def test_one_bad_item_fails_alone() -> None:
    batcher = MicroBatcher(double_all, threading.Lock(), max_batch=8, wait_s=0.2)
    with ThreadPoolExecutor(6) as pool:
        futures = [pool.submit(batcher, i) for i in (1, 2, -3, 4, 5, 6)]
        outcomes = []
        for f in futures:
            try:
                outcomes.append(f.result())
            except ValueError as err:
                outcomes.append(str(err))
    assert outcomes[:2] == [2, 4] and outcomes[3:] == [8, 10, 12]
    assert outcomes[2] == "negative item in [-3]"  # the retry ran it alone


def test_a_single_failure_is_raised_to_its_caller() -> None:
    batcher = MicroBatcher(double_all, threading.Lock(), wait_s=0.0)
    with pytest.raises(ValueError, match="negative"):
        batcher(-1)
    assert batcher(5) == 10  # the worker survives


def test_the_lock_serialises_model_calls() -> None:
    gate = threading.Lock()
    batcher = MicroBatcher(double_all, gate, wait_s=0.0)
    gate.acquire()
    result: list[int] = []
    caller = threading.Thread(target=lambda: result.append(batcher(21)))
    caller.start()
    caller.join(0.3)
    assert caller.is_alive() and not result  # waits while someone else holds the device
    gate.release()
    caller.join(5)
    assert result == [42]


class Abort(BaseException):
    """Past `except Exception`, as SystemExit is."""


def test_a_call_that_aborts_fails_its_callers_instead_of_stranding_them() -> None:
    def aborts_on_zero(items: list[int]) -> list[int]:
        if 0 in items:
            raise Abort("stop")
        return double_all(items)

    def call(item: int) -> None:
        try:
            outcome.append(batcher(item))
        except Abort as err:
            outcome.append(err)

    batcher, outcome = MicroBatcher(aborts_on_zero, threading.Lock(), wait_s=0.0), []
    caller = threading.Thread(target=call, args=(0,), daemon=True)
    caller.start()
    caller.join(5)
    assert len(outcome) == 1 and isinstance(outcome[0], Abort)  # without the guard: waits forever on its future
    assert batcher(4) == 8  # and the worker still serves


def test_batch_sizes_stay_bounded_in_a_long_running_server() -> None:
    batcher = MicroBatcher(double_all, threading.Lock(), wait_s=0.0)
    for i in range(SIZES_KEPT + 50):
        batcher(i)
    assert len(batcher.batch_sizes) == SIZES_KEPT
