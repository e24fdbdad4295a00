"""Settings of a training run that do not change what it computes."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class RunOptions:
    """Settings of a run that do not change what it computes (except ``amp``)."""

    out: str | None = None              # run folder; None: runs/<recipe>-<timestamp>
    resume: str | None = None           # checkpoint file to continue from
    resume_batch_size: int = 0          # > 0: per-process batch of the resumed run (other world size)
    data_dir: str | None = None
    download: bool = False
    device: str = "auto"                # cpu | cuda | auto
    threads: int = 0                    # torch intra-op threads; 0: torch's default
    amp: bool = False                   # autocast: bfloat16 on CPU, float16 + GradScaler on CUDA
    tensorboard: bool = False
    progress: bool = True
    deterministic: bool = True
    checkpoint_every_steps: int = 0     # > 0: also save last.pt every N steps (mid-epoch)
    dist_timeout_s: float = 300.0
