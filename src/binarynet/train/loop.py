"""The training loop: one run of a recipe, single-process or under torchrun.

Per epoch e (0-based): the learning rate ``lr(e)`` (:mod:`.schedule`) times each binary layer's
Glorot scale; steps over the epoch's global sample order (:mod:`.distributed`), each step
forward + loss + backward + optimizer step (the library optimizers clip latent weights);
then validation and test passes in eval mode, a metrics record and ``last.pt``
(``best.pt`` too when the validation error improved). The paper's protocol reports the test
error at the best-validation epoch.

Reproducibility: the randomness of global step k on rank r (dropout, stochastic sign,
augmentation) is drawn from generators seeded with (seed, k, r), and the epoch order from
(seed, epoch), so a run is a pure function of its recipe and world size; resuming from any
checkpoint, even one written mid-epoch, continues exactly (same weights as an uninterrupted
run, bit for bit, on the same machine and thread count).
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .. import __version__, data, losses, models, optim
from ..errors import BinarynetError, CheckpointError
from . import checkpoint as ckpt
from . import distributed, schedule, synthetic
from .interrupt import StopRequest, TrainingInterrupted
from .metrics import MetricsLog, ProgressBar, TensorBoardLog, Totals, format_duration, require_tensorboard
from .recipes import Recipe
from .syncbn import convert_sync_batchnorm

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
LAST = "last.pt"
BEST = "best.pt"


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


# ---------------------------------------------------------------------------------------------
# Data

def load_split(recipe: Recipe, split: str, options: RunOptions, max_samples: int):
    """The ``split`` of the recipe's dataset as a ``binarynet.data.ImageDataset``."""
    if recipe.dataset == "synthetic":
        images, labels = synthetic.generate(split, seed=recipe.seed)
        dataset = data.ImageDataset("synthetic", split, torch.from_numpy(images), torch.from_numpy(labels),
                                    tuple(str(c) for c in range(10)))
    else:
        dataset = data.load(recipe.dataset, split, data_dir=options.data_dir, download=options.download)
    if max_samples and max_samples < len(dataset):
        dataset = dataclasses.replace(dataset, images=dataset.images[:max_samples],
                                      labels=dataset.labels[:max_samples])
    return dataset


def input_normalization(recipe: Recipe, train_set) -> tuple:
    """Per-channel (scale, offset) with x_f = x_u8 * scale + offset for the recipe's dataset."""
    if recipe.dataset != "synthetic":
        scale, offset = data.normalization(recipe.dataset, recipe.normalization)
        return tuple(float(s) for s in scale), tuple(float(o) for o in offset)
    channels = train_set.images.shape[1]
    if recipe.normalization == "paper":
        return (2.0 / 255.0,) * channels, (-1.0,) * channels
    pixels = train_set.images.double().div(255.0).transpose(0, 1).reshape(channels, -1)
    mean, std = pixels.mean(dim=1), pixels.std(dim=1)
    return tuple((1.0 / (255.0 * std)).tolist()), tuple((-mean / std).tolist())


def make_batch(dataset, indices: torch.Tensor, normalization: tuple, device, augment=None, generator=None):
    """``(x float32, y int64)`` of ``dataset[indices]`` on ``device`` (augmented if asked)."""
    return next(iter(data.batches(dataset, len(indices), sampler_indices=indices, normalization=normalization,
                                  device=device, augment=augment, generator=generator)))


# ---------------------------------------------------------------------------------------------
# Model, loss, optimizer

def build_model(recipe: Recipe) -> torch.nn.Module:
    """The recipe's model with its overrides, initialised from the recipe's seed."""
    torch.manual_seed(recipe.seed)
    overrides = {k: tuple(v) if isinstance(v, list) else v for k, v in recipe.model_overrides.items()}
    try:
        return models.get(recipe.model, **overrides)
    except (TypeError, ValueError) as exc:  # unknown model or option, bad option value
        raise BinarynetError(f"recipe {recipe.name}, model {recipe.model}: {exc}") from None


def loss_function(recipe: Recipe):
    """``f(scores, labels) -> mean loss`` of the recipe."""
    return losses.squared_hinge if recipe.loss == "squared_hinge" else F.cross_entropy


def build_optimizer(recipe: Recipe, model: torch.nn.Module, lr: float) -> torch.optim.Optimizer:
    """bn.optim.Adam or ShiftAdaMax over ``param_groups`` (per-layer Glorot LR scales)."""
    groups = optim.param_groups(model, lr, pow2=recipe.pow2_lr_scale)
    if recipe.optimizer == "adam":
        kwargs = {"betas": tuple(recipe.betas)} if recipe.betas else {}
        return optim.Adam(groups, lr=lr, weight_decay=recipe.weight_decay, **kwargs)
    if recipe.weight_decay:
        raise ValueError(f"recipe {recipe.name}: shift_adamax has no weight decay")
    return optim.ShiftAdaMax(groups, lr=lr, betas=tuple(recipe.betas) or None, variant=recipe.optimizer_variant)


def set_learning_rate(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Each group's rate = ``lr`` x its ``lr_scale`` (1 for biases and BN)."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The model inside a DistributedDataParallel wrapper (or the model itself)."""
    return model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model


# ---------------------------------------------------------------------------------------------
# Evaluation

@torch.no_grad()
def evaluate(model, dataset, normalization, loss_fn, *, batch_size: int, device,
             ctx: distributed.Context = distributed.Context(), amp: bool = False) -> Totals:
    """Loss and error of ``model`` (eval mode) on ``dataset``, summed over all ranks' shards."""
    was_training = model.training
    model.eval()
    shard = distributed.shard_for_eval(len(dataset), ctx)
    sums = torch.zeros(3, dtype=torch.float64, device=device)
    try:
        for x, y in data.batches(dataset, batch_size, sampler_indices=shard, normalization=normalization,
                                 device=device):
            with _autocast(device, amp):
                scores = model(x)
            scores = scores.float()
            sums += torch.stack([loss_fn(scores, y).double() * len(y),
                                 (scores.argmax(dim=1) == y).sum().double(),
                                 torch.tensor(float(len(y)), dtype=torch.float64, device=device)])
    finally:
        model.train(was_training)
    return Totals.from_tensor(distributed.all_reduce_sum(ctx, sums))


def _autocast(device: torch.device, enabled: bool):
    dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
    return torch.autocast(device_type=device.type, dtype=dtype, enabled=enabled)


# ---------------------------------------------------------------------------------------------
# The run

def default_out_dir(recipe_name: str) -> str:
    """``runs/<recipe>-<YYYYmmdd-HHMMSS>`` in the current directory."""
    return os.path.join("runs", f"{recipe_name}-{time.strftime('%Y%m%d-%H%M%S')}")


def train(recipe: Recipe | None, options: RunOptions) -> dict:
    """Run (or resume, with ``options.resume``) a recipe; returns the run summary dict.

    Under torchrun this joins the process group first and leaves it at the end. Raises
    TrainingInterrupted after saving when SIGINT/SIGTERM arrives.
    """
    ctx = distributed.setup(options.device, options.dist_timeout_s)
    deterministic = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    try:
        summary = Trainer(recipe, options, ctx).run()
        distributed.barrier(ctx)  # leave together: rank 0 may still be writing the checkpoint
        return summary
    finally:
        torch.use_deterministic_algorithms(deterministic[0], warn_only=deterministic[1])
        distributed.teardown(ctx)


class Trainer:
    """State of one run; see :func:`train` and the module docstring."""

    def __init__(self, recipe: Recipe | None, options: RunOptions, ctx: distributed.Context):
        self.options, self.ctx, self.device = options, ctx, ctx.device
        self.logs = []  # per-epoch record sinks (rank 0): metrics.jsonl, TensorBoard
        if options.tensorboard and ctx.is_main:
            require_tensorboard()  # fail before anything is written
        if options.threads:
            torch.set_num_threads(options.threads)
        if options.deterministic:
            if self.device.type == "cuda":
                os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
                torch.backends.cudnn.benchmark = False
            torch.use_deterministic_algorithms(True, warn_only=True)

        resumed = ckpt.load(options.resume) if options.resume else None
        if resumed is not None:
            stored = Recipe.from_dict(resumed["config"]["recipe"])
            if options.resume_batch_size:
                stored = dataclasses.replace(stored, batch_size=options.resume_batch_size)
            if recipe is not None and recipe.to_dict() != stored.to_dict():
                changed = sorted(k for k, v in recipe.to_dict().items() if stored.to_dict()[k] != v)
                raise CheckpointError(
                    f"--resume continues the run's own recipe; these fields differ from the checkpoint: "
                    f"{', '.join(changed)} (start a new run to change them)")
            recipe = stored
        if recipe is None:
            raise ValueError("train() needs a recipe or options.resume")
        self.recipe = recipe
        self.out = self._run_dir(resumed)

        # Batch and learning rate across processes; a resumed run keeps its LR factor.
        self.batch_size = recipe.batch_size
        self.global_batch = recipe.batch_size * ctx.world_size
        self.lr_factor = (resumed["progress"]["lr_factor"] if resumed is not None else
                          schedule.batch_scaling_factor(recipe.lr_scaling, self.global_batch, recipe.batch_size))

        # Data (with --download under torchrun, local rank 0 of each machine fetches while the
        # others wait; machines sharing a data folder take turns under data.download's lock).
        if options.download and not ctx.is_node_main:
            distributed.barrier(ctx)
        self.train_set = load_split(recipe, recipe.train_split, options, recipe.max_train_samples)
        self.val_set = load_split(recipe, recipe.val_split, options, recipe.max_eval_samples) if recipe.val_split else None
        self.test_set = load_split(recipe, recipe.test_split, options, recipe.max_eval_samples) if recipe.test_split else None
        if options.download and ctx.is_node_main:
            distributed.barrier(ctx)
        self.normalization = input_normalization(recipe, self.train_set)
        self.steps_per_epoch = len(self.train_set) // self.global_batch
        if self.steps_per_epoch < 1:
            raise ValueError(f"the training split has {len(self.train_set)} samples, fewer than one global "
                             f"batch of {self.global_batch} ({self.batch_size} x {ctx.world_size} processes)")
        self.augment = data.random_crop_flip if recipe.augment == "crop_flip" else None

        # Model and optimizer.
        model = build_model(recipe).to(self.device)
        self.loss_fn = loss_function(recipe)
        self.optimizer = build_optimizer(recipe, model, self.lr_at(0))
        self.scaler = torch.amp.GradScaler("cuda") if options.amp and self.device.type == "cuda" else None
        self.progress = {"epoch": 0, "epoch_position": 0, "global_step": 0, "lr": self.lr_at(0),
                         "order_seed": recipe.seed, "best_val_error": None, "best_epoch": None,
                         "test_error_at_best": None, "epoch_totals": [0.0, 0.0, 0.0], "elapsed_s": 0.0,
                         "lr_factor": self.lr_factor, "global_batch_size": self.global_batch}
        if resumed is not None:
            self._restore(model, resumed)
        if ctx.distributed:
            model = convert_sync_batchnorm(model)
            model = torch.nn.parallel.DistributedDataParallel(
                model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        self.model = model

    # -- set-up helpers ------------------------------------------------------------------------

    def lr_at(self, epoch: int) -> float:
        """Base learning rate of ``epoch`` (before per-layer scales)."""
        return schedule.recipe_lr(self.recipe, min(epoch, self.recipe.epochs - 1), self.lr_factor)

    def _run_dir(self, resumed) -> str:
        options = self.options
        if options.out:
            out = options.out
        elif options.resume:
            out = os.path.dirname(os.path.abspath(options.resume))
        else:
            out = distributed.broadcast_object(self.ctx, default_out_dir(self.recipe.name))
        if self.ctx.is_main:
            if resumed is None and os.path.exists(os.path.join(out, LAST)):
                raise BinarynetError(f"{out} already holds a run ({LAST}); continue it with --resume "
                                     f"or choose another --out")
            os.makedirs(out, exist_ok=True)
        return out

    def _restore(self, model, resumed) -> None:
        try:
            model.load_state_dict(resumed["model"])
            self.optimizer.load_state_dict(resumed["optimizer"])
        except (RuntimeError, ValueError, KeyError) as exc:
            raise CheckpointError(f"checkpoint {self.options.resume} does not match its recipe's model/"
                                  f"optimizer: {str(exc).splitlines()[0]}") from None
        if self.scaler is not None and "grad_scaler" in resumed:
            self.scaler.load_state_dict(resumed["grad_scaler"])
        stored_batch = resumed["progress"]["global_batch_size"]
        self.progress.update(resumed["progress"], global_batch_size=self.global_batch)
        if stored_batch != self.global_batch and self.ctx.is_main:
            print(f"note: the global batch changes from {stored_batch} to {self.global_batch} "
                  f"({self.batch_size} x {self.ctx.world_size} processes); the learning rate keeps its "
                  f"factor {self.lr_factor:g}. Pass --batch-size {stored_batch // self.ctx.world_size} "
                  f"to keep the batch", file=sys.stderr)
        ckpt.restore_rng(resumed["rng"])

    # -- checkpoints ---------------------------------------------------------------------------

    def config(self) -> dict:
        """The resolved configuration written to config.json and into checkpoints."""
        return {
            "recipe": self.recipe.to_dict(),
            "world_size": self.ctx.world_size,
            "global_batch_size": self.global_batch,
            "lr_factor": self.lr_factor,
            "steps_per_epoch": self.steps_per_epoch,
            "train_samples": len(self.train_set),
            "device": str(self.device),
            "amp": self.options.amp,
            "threads": torch.get_num_threads(),
            "normalization": {"scale": list(self.normalization[0]), "offset": list(self.normalization[1])},
            "binarynet_version": __version__,
            "torch_version": str(torch.__version__),  # TorchVersion is not a weights_only type
        }

    def checkpoint(self) -> dict:
        """Everything needed to continue exactly (see binarynet.train.checkpoint)."""
        state = {
            "format": ckpt.FORMAT_NAME,
            "format_version": ckpt.FORMAT_VERSION,
            "binarynet_version": __version__,
            "config": self.config(),
            "model": unwrap(self.model).state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "normalization": {"scale": list(self.normalization[0]), "offset": list(self.normalization[1])},
            "progress": dict(self.progress),
            "rng": ckpt.capture_rng(),
        }
        if self.scaler is not None:
            state["grad_scaler"] = self.scaler.state_dict()
        return state

    def save(self, best: bool = False) -> None:
        """Rank 0 writes last.pt (and best.pt as a hard link to the same file when ``best``)."""
        if not self.ctx.is_main:
            return
        last = os.path.join(self.out, LAST)
        ckpt.save(last, self.checkpoint())
        if best:
            _link_or_copy(last, os.path.join(self.out, BEST))

    # -- the loop ------------------------------------------------------------------------------

    def run(self) -> dict:
        """Train from the current progress to the last epoch; returns :meth:`summary`."""
        recipe, ctx, progress = self.recipe, self.ctx, self.progress
        if ctx.is_main:
            with open(os.path.join(self.out, CONFIG_FILE), "w", encoding="utf-8") as f:
                json.dump(self.config(), f, indent=2, sort_keys=True)
            metrics = MetricsLog(os.path.join(self.out, METRICS_FILE))
            metrics.truncate_after(progress["epoch"] + 1)  # records of epochs this run redoes
            self.logs.append(metrics)
            if self.options.tensorboard:
                self.logs.append(TensorBoardLog(os.path.join(self.out, "tensorboard")))
            self._announce()
        try:
            with StopRequest() as stop:
                while progress["epoch"] < recipe.epochs:
                    self._run_epoch(stop)
        finally:
            for log in self.logs:
                if hasattr(log, "close"):
                    log.close()
        summary = self.summary()
        if ctx.is_main:
            self._print_summary(summary)
        return summary

    def _announce(self) -> None:
        r, p = self.recipe, self.progress
        if p["epoch"] >= r.epochs:
            start = "already finished"
        elif p["global_step"]:
            start = f"resuming at epoch {p['epoch'] + 1}, step {p['global_step']}"
        else:
            start = "starting"
        print(f"binarynet train: {r.name} ({r.model} on {r.dataset}), {start}; {r.epochs} epochs x "
              f"{self.steps_per_epoch} steps of {self.global_batch} samples"
              f"{f' ({self.batch_size} x {self.ctx.world_size} processes)' if self.ctx.distributed else ''}"
              f" on {self.device}; run folder {self.out}", file=sys.stderr, flush=True)

    def _run_epoch(self, stop: StopRequest) -> dict:
        recipe, ctx, progress = self.recipe, self.ctx, self.progress
        epoch = progress["epoch"]
        lr = self.lr_at(epoch)
        progress["lr"] = lr
        set_learning_rate(self.optimizer, lr)
        order = distributed.epoch_order(len(self.train_set), progress["order_seed"], epoch)
        # This rank's sums of the epoch; a checkpoint holds the sums over all ranks, which
        # rank 0 alone carries on after a resume (whatever the number of processes).
        totals = torch.tensor(progress["epoch_totals"] if ctx.is_main else [0.0, 0.0, 0.0], dtype=torch.float64,
                              device=self.device)  # kept on the device: no synchronisation per step
        first_step = progress["epoch_position"] // self.global_batch
        bar = ProgressBar(self.steps_per_epoch, f"epoch {epoch + 1}/{recipe.epochs}",
                          enabled=ctx.is_main and self.options.progress, initial_step=first_step)
        session_start, session_samples = time.monotonic(), 0
        elapsed_before = progress["elapsed_s"]
        self.model.train()
        position = progress["epoch_position"]
        while position + self.global_batch <= len(order):
            indices = distributed.shard_of_step(order, position, self.batch_size, ctx)
            step_totals = self.train_step(indices)
            totals += step_totals
            position += self.global_batch
            progress["global_step"] += 1
            progress["epoch_position"] = position
            session_samples += self.global_batch
            step = position // self.global_batch
            if bar.due(step):
                seen = Totals.from_tensor(totals.cpu())
                bar.update(step, session_samples, seen.loss, 1.0 - seen.error)
            else:
                bar.update(step, session_samples, math.nan, math.nan)
            every = self.options.checkpoint_every_steps
            stopping = distributed.any_rank(ctx, stop.requested)
            if stopping or (every and progress["global_step"] % every == 0):  # same step on all ranks
                progress["elapsed_s"] = elapsed_before + time.monotonic() - session_start
                progress["epoch_totals"] = distributed.all_reduce_sum(ctx, totals).tolist()
                self.save()
            if stopping:
                bar.close()
                distributed.barrier(ctx)  # all ranks stop here: leave after rank 0 has saved
                self._stop(stop.signum or 15)
        bar.close()
        train_totals = Totals.from_tensor(distributed.all_reduce_sum(ctx, totals))
        epoch_time = time.monotonic() - session_start
        record = self._end_epoch(epoch, lr, train_totals, elapsed_before + epoch_time, epoch_time,
                                 session_samples)
        return record

    def train_step(self, indices: torch.Tensor) -> torch.Tensor:
        """One optimizer step on this rank's ``indices``; returns [loss x n, correct, n] (float64).

        The step's randomness comes from generators seeded with (seed, global step, rank).
        """
        step_seed = distributed.mix_seed(self.recipe.seed, self.progress["global_step"], self.ctx.rank)
        torch.manual_seed(step_seed)
        generator = torch.Generator().manual_seed(distributed.mix_seed(step_seed, 1))
        x, y = make_batch(self.train_set, indices, self.normalization, self.device, self.augment, generator)
        with _autocast(self.device, self.options.amp):
            scores = self.model(x)
        scores = scores.float()
        loss = self.loss_fn(scores, y)
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            loss.backward()
            self.optimizer.step()
        with torch.no_grad():
            correct = (scores.argmax(dim=1) == y).sum()
            return torch.stack([loss.detach().double() * len(y), correct.double(),
                                torch.tensor(float(len(y)), dtype=torch.float64, device=loss.device)])

    def _end_epoch(self, epoch, lr, train_totals, elapsed, epoch_time, samples) -> dict:
        recipe, progress = self.recipe, self.progress
        # The bare model: DDP's forward broadcasts buffers, and ranks' shards may differ in batch count.
        model = unwrap(self.model)
        kwargs = dict(batch_size=recipe.eval_batch_size, device=self.device, ctx=self.ctx, amp=self.options.amp)
        val = evaluate(model, self.val_set, self.normalization, self.loss_fn, **kwargs) if self.val_set else None
        test = evaluate(model, self.test_set, self.normalization, self.loss_fn, **kwargs) if self.test_set else None
        # Without a validation split every epoch counts as the newest best (last epoch wins).
        improved = val is None or progress["best_val_error"] is None or val.error < progress["best_val_error"]
        if improved:
            progress["best_val_error"] = val.error if val is not None else None
            progress["best_epoch"] = epoch + 1
            progress["test_error_at_best"] = test.error if test is not None else None
        progress.update(epoch=epoch + 1, epoch_position=0, epoch_totals=[0.0, 0.0, 0.0], elapsed_s=elapsed,
                        lr=self.lr_at(epoch + 1))
        record = {
            "epoch": epoch + 1, "lr": lr, "global_step": progress["global_step"],
            "train_loss": train_totals.loss, "train_error": train_totals.error,
            "val_loss": val.loss if val else None, "val_error": val.error if val else None,
            "test_loss": test.loss if test else None, "test_error": test.error if test else None,
            "best_epoch": progress["best_epoch"], "best_val_error": progress["best_val_error"],
            "test_error_at_best": progress["test_error_at_best"],
            "epoch_time_s": epoch_time, "elapsed_s": elapsed,
            "samples_per_s": samples / epoch_time if epoch_time > 0 else None,
        }
        # The record first: a crash before the checkpoint redoes the epoch and drops the record.
        for log in self.logs:
            log.append(record)
        self.save(best=improved)
        if self.ctx.is_main and self.options.progress:
            parts = [f"epoch {epoch + 1}/{recipe.epochs}", f"lr {lr:.3g}",
                     f"train loss {train_totals.loss:.4f} err {100 * train_totals.error:.2f}%"]
            if val:
                parts.append(f"val err {100 * val.error:.2f}%")
            if test:
                parts.append(f"test err {100 * test.error:.2f}%")
            parts.append(f"{format_duration(epoch_time)}{' *' if improved and val else ''}")
            print(" | ".join(parts), file=sys.stderr, flush=True)
        return record

    def _stop(self, signum: int) -> None:
        p = self.progress
        where = os.path.join(self.out, LAST)
        raise TrainingInterrupted(
            f"interrupted by signal {signum} at epoch {p['epoch'] + 1}, global step {p['global_step']}; "
            f"checkpoint saved to {where}. Resume with: binarynet train --resume --out {self.out}"
            f"{' (under the same torchrun command)' if self.ctx.distributed else ''}",
            signum)

    # -- results -------------------------------------------------------------------------------

    def summary(self) -> dict:
        """The run's outcome: paper protocol numbers and where the files are."""
        p = self.progress
        return {
            "recipe": self.recipe.name, "out": self.out, "epochs": p["epoch"], "global_step": p["global_step"],
            "best_epoch": p["best_epoch"], "best_val_error": p["best_val_error"],
            "test_error_at_best": p["test_error_at_best"], "elapsed_s": p["elapsed_s"],
            "world_size": self.ctx.world_size,
        }

    @staticmethod
    def _print_summary(s: dict) -> None:
        parts = [f"done: {s['epochs']} epochs in {format_duration(s['elapsed_s'])}"]
        if s["best_val_error"] is not None:
            parts.append(f"best validation error {100 * s['best_val_error']:.2f}% at epoch {s['best_epoch']}")
        if s["test_error_at_best"] is not None:
            parts.append(f"test error there {100 * s['test_error_at_best']:.2f}%")
        parts.append(f"checkpoints in {s['out']}")
        print("binarynet train: " + "; ".join(parts), file=sys.stderr, flush=True)


def _link_or_copy(source: str, target: str) -> None:
    """Make ``target`` the same file as ``source`` atomically (hard link; copy if unsupported).

    ``last.pt`` is later replaced by a new file, so the link keeps this epoch's contents.
    """
    tmp = target + ".tmp"
    if os.path.exists(tmp):
        os.unlink(tmp)
    try:
        os.link(source, tmp)
    except OSError:
        import shutil

        shutil.copyfile(source, tmp)
    os.replace(tmp, target)
