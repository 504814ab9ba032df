"""Which slice of a dataset this process computes, and where it writes: the whole contract of scaling out.

A job over N items may run as one process or as many writers (GPUs of one node under ``accelerate launch``, array
tasks of a SLURM job through Hydra's submitit launcher). Every writer owns the items whose id hashes to its shard,
so membership depends on the id only — never on order, launch time or how many shards ran before — and appends to
its own records file in the job's one directory. Launch engines only say how many writers there are and which one
this is; nothing here schedules anything.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch

from easyinv.run.files import records_file_name
from easyinv.validation import ConfigError, resolve_device

__all__ = ["Shard", "launch_state", "resolve_shard", "shard_of"]

log = logging.getLogger(__name__)

# accelerate (torchrun) and MPI launchers announce the number of processes in one of these variables
_WORLD_SIZE_VARS = ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")
# the end-of-run barrier may wait for the slowest shard of a long run (a resume can leave one shard all the work);
# torch's default of 30 min would kill the finished processes long before that
BARRIER_TIMEOUT = timedelta(days=7)


def shard_of(item_id: str, count: int) -> int:
    """The shard (0 … count-1) that owns ``item_id``: a stable hash of the id, the same on every machine."""
    if count < 1:
        raise ValueError(f"shard count must be >= 1, got {count}")
    digest = hashlib.sha256(f"shard:{item_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % count


@dataclass(frozen=True)
class Shard:
    """This writer's slice: ``index`` of ``count``, the device it computes on, and whether it is the main process."""

    index: int = 0
    count: int = 1
    device: torch.device = torch.device("cpu")
    main: bool = True

    def owns(self, item_id: str) -> bool:
        return self.count == 1 or shard_of(item_id, self.count) == self.index

    @property
    def records_name(self) -> str:
        """``records.jsonl`` for a single writer, ``records.shard-<index>-of-<count>.jsonl`` for one of many."""
        return records_file_name(self.index, self.count)

    def describe(self) -> dict[str, Any]:
        return {"index": self.index, "count": self.count, "device": str(self.device), "main": self.main}


def _world_size() -> int:
    for name in _WORLD_SIZE_VARS:
        value = os.environ.get(name)
        if value and value.isdigit():
            return int(value)
    return 1


def launch_state() -> Any | None:
    """accelerate's ``PartialState`` when this process is one of several started by a launcher, else None.

    A plain process never initialises a process group. On a machine without CUDA (or with ``accelerate launch
    --cpu``) the group uses gloo, so ``accelerate launch --multi_gpu --num_processes N`` runs N CPU processes too.
    """
    if _world_size() <= 1:
        return None
    from accelerate import PartialState
    from accelerate.utils import parse_flag_from_env

    cpu = not torch.cuda.is_available() or parse_flag_from_env("ACCELERATE_USE_CPU")
    return PartialState(cpu=cpu, timeout=BARRIER_TIMEOUT)


def resolve_shard(shard_cfg: Any, device: str) -> Shard:
    """The shard and device of this process from ``shard.index/count`` and ``device``, composed with the launcher's.

    Under ``accelerate launch`` with P processes, process r of a configured shard (i, n) becomes shard
    (i·P + r, n·P): with the defaults (0, 1) that is simply (r, P), and a SLURM array of n tasks that each start P
    processes splits the data n·P ways. ``device=auto`` takes the launcher's device (``cuda:<local rank>``).
    """
    index = shard_cfg.get("index", 0) if shard_cfg is not None else 0
    count = shard_cfg.get("count", 1) if shard_cfg is not None else 1
    if not isinstance(count, int) or isinstance(count, bool) or count < 1:
        raise ConfigError(f"shard.count must be an integer >= 1, got {count!r}")
    if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < count:
        raise ConfigError(f"shard.index must be an integer in [0, shard.count={count}), got {index!r}")
    state = launch_state()
    if state is None or state.num_processes <= 1:
        return Shard(index, count, resolve_device(device), main=True)
    procs, rank = int(state.num_processes), int(state.process_index)
    chosen = state.device if device == "auto" else resolve_device(device)
    if chosen.type == "cpu":
        chosen = torch.device("cpu")
    log.info("process %d of %d (accelerate, %s): shard %d of %d on %s", rank, procs, state.distributed_type,
             index * procs + rank, count * procs, chosen)
    return Shard(index * procs + rank, count * procs, chosen, main=bool(state.is_main_process))
