"""Which process of a distributed (DDP) run this is, read from the launcher's environment.

Lightning's DDP launcher starts the same command once more per extra device, with
``LOCAL_RANK`` set (``torchrun`` and SLURM set ``RANK`` / ``SLURM_PROCID``). Every
process trains; only the first one evaluates, writes the run directory and prints.
After training, ``trainer.is_global_zero`` is the authority (estimators keep it as
``is_primary_``); these helpers serve before that, e.g. to quiet the logs.

>>> import os
>>> global_rank({"LOCAL_RANK": "1"}), global_rank({}), is_primary({"RANK": "0"})
(1, 0, True)
"""

from __future__ import annotations

import os
from collections.abc import Mapping

# the order Lightning reads them in (lightning.fabric.utilities.rank_zero._get_rank)
RANK_VARIABLES = ("RANK", "LOCAL_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK")


def global_rank(environ: Mapping[str, str] | None = None) -> int:
    """This process's rank (0 when not launched as a distributed run)."""
    env = os.environ if environ is None else environ
    for key in RANK_VARIABLES:
        value = env.get(key)
        if value is not None and value.strip().isdigit():
            return int(value)
    return 0


def is_primary(environ: Mapping[str, str] | None = None) -> bool:
    """True in the process that writes files and prints (rank 0, or no DDP at all)."""
    return global_rank(environ) == 0
