"""Settings of a training run that do not change what it computes."""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import BinarynetError

# Options that only make sense on a GPU: on the CPU they would be slower or untested.
GPU_ONLY = ("compile", "channels_last")


class RunOptionError(BinarynetError, ValueError):
    """A run option out of its range or not available on the device; the message names it."""


@dataclass
class RunOptions:
    """Settings of a run that do not change what it computes (except ``amp``, ``compile`` and
    ``channels_last``, which change rounding)."""

    out: str | None = None              # run folder; None: runs/<recipe>-<timestamp>
    resume: str | None = None           # checkpoint file to continue from
    resume_batch_size: int = 0          # > 0: per-process batch of the resumed run (other world size)
    data_dir: str | None = None
    download: bool = False
    device: str = "auto"                # cpu | cuda | auto
    threads: int = 0                    # torch intra-op threads; 0: leave torch's setting (the CLI
                                        # passes binarynet.threads.default_threads())
    amp: bool = False                   # bfloat16 autocast (float16 + GradScaler on GPUs without bf16)
    compile: bool = False               # GPU only: torch.compile the model
    channels_last: bool = False         # GPU only: NHWC convolutions (tensor cores)
    tensorboard: bool = False
    progress: bool = True
    deterministic: bool = True
    checkpoint_every_steps: int = 0     # > 0: also save last.pt every N steps (mid-epoch)
    dist_timeout_s: float = 300.0

    def check(self, device_type: str) -> None:
        """RunOptionError naming the option when one is out of range or needs a GPU that
        ``device_type`` ("cpu", "cuda") is not."""
        for name in ("threads", "resume_batch_size", "checkpoint_every_steps"):
            if getattr(self, name) < 0:
                raise RunOptionError(f"run option {name} must be >= 0, got {getattr(self, name)}")
        if not self.dist_timeout_s > 0:
            raise RunOptionError(f"run option dist_timeout_s must be > 0, got {self.dist_timeout_s}")
        if device_type != "cuda":
            for name in GPU_ONLY:
                if getattr(self, name):
                    raise RunOptionError(f"run option {name} needs a CUDA device; this run is on {device_type}")
