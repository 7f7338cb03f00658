"""Job ids: 32 random hex digits, made in the creating process (so a hotjob can listen for its
job before the job exists).

A seeded Mersenne Twister instead of uuid4: uuid4 asks the OS for randomness on every call,
which costs more than the rest of `create()`. The seed comes from the OS, and a forked child
reseeds so that parent and child never draw the same ids. Ids need to be unique, not secret.
"""

from __future__ import annotations

import os
import random

from kickq._model import forks

_random = random.Random(os.urandom(32))


@forks.in_child
def _reseed() -> None:
    _random.seed(os.urandom(32))


def new_id() -> str:
    return f"{_random.getrandbits(128):032x}"
