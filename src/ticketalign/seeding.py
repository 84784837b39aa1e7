"""Seeds derived from seeds: one reproducible random stream per (run seed, epoch, level, ...).

Data order, augmentation, IMP levels and random masks each draw from their own stream, a pure
function of the integers that name it. Any module may need this (data, pruning, the scripts),
so it lives here, depending on nothing of the library.
"""

import numpy as np


def derive_seed(*parts: int) -> int:
    """A distinct, reproducible 63-bit seed for each tuple of integers (e.g. run seed, epoch)."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1, dtype=np.uint64)[0] >> 1)
