"""The annotation tool's torch thread: every request's torch work runs on one long-lived thread."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, TypeVar

import torch

T = TypeVar("T")

_TORCH_THREAD: Any = None
_TORCH_THREAD_GUARD = threading.Lock()


def on_torch_thread(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run ``fn(*args, **kwargs)`` on one long-lived thread shared by every caller, and return its result.

    Each OS thread that runs torch CPU kernels gets its own OpenMP team, and while a second such thread is alive
    the kernels of both slow down: on the 2-core development host an EdgeFlow click took 70 ms instead of 38 ms
    while an idle thread that had once called torch was alive. Servers that answer requests from a thread pool
    (the annotation tool) funnel their torch work through here so that only one team ever exists. Exceptions
    propagate to the caller.
    """
    global _TORCH_THREAD
    with _TORCH_THREAD_GUARD:
        if _TORCH_THREAD is None:
            from concurrent.futures import ThreadPoolExecutor

            _TORCH_THREAD = ThreadPoolExecutor(
                max_workers=1,
                thread_name_prefix="robustvision-torch",
                initializer=torch.set_num_threads,  # the creator's thread count (OpenMP settings are per thread)
                initargs=(torch.get_num_threads(),),
            )
    if threading.current_thread().name.startswith("robustvision-torch"):
        return fn(*args, **kwargs)  # already there (a nested call would otherwise wait on itself)
    return _TORCH_THREAD.submit(fn, *args, **kwargs).result()
