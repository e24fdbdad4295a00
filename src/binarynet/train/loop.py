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

Where the parts live: the recipe's model, loss and optimizer in :mod:`.builders`, its data in
:mod:`.inputs`, evaluation in :mod:`.evaluation`, the checkpoint format in :mod:`.checkpoint`,
the run folder in :mod:`.run_folder`, console lines in :mod:`.console`.
"""
from __future__ import annotations

import dataclasses
import math
import os
import time

import torch

from .. import __version__, data, optim
from ..errors import CheckpointError
from ..runs import LAST, METRICS_FILE
from . import checkpoint as ckpt
from . import console, distributed, schedule, two_step
from .builders import amp_dtype, autocast, build_model, build_optimizer, loss_function, set_learning_rate, unwrap
from .distill import Teacher, distilled_loss
from .evaluation import evaluate
from .inputs import input_normalization, load_split
from .interrupt import StopRequest, TrainingInterrupted
from .metrics import MetricsLog, ProgressBar, TensorBoardLog, Totals, require_tensorboard
from .options import RunOptions
from .recipes import Recipe, RecipeError
from .run_folder import TENSORBOARD_DIR, RunFolder
from .step_batches import StepBatches
from .syncbn import convert_sync_batchnorm

# Under torchrun on GPUs the ranks agree on a stop request (SIGINT/SIGTERM) every this many
# steps, not every step: each agreement waits for the devices to finish their queued work.
STOP_POLL_STEPS = 25

__all__ = ["RunOptions", "Trainer", "build_model", "evaluate", "load_split", "loss_function", "train"]


def train(recipe: Recipe | None, options: RunOptions, teacher: torch.nn.Module | None = None) -> dict:
    """Run (or resume, with ``options.resume``) a recipe; returns the run summary dict.

    ``teacher``: a float model to distil from (:mod:`.distill`), instead of the recipe's
    ``teacher`` checkpoint (a model object is not stored: resuming needs it passed again).

    Under torchrun this joins the process group first and leaves it at the end. Raises
    TrainingInterrupted after saving when SIGINT/SIGTERM arrives. A run that fails before its
    first checkpoint removes the run folder it created.
    """
    ctx = distributed.setup(options.device, options.dist_timeout_s)
    deterministic = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    try:
        if options.tensorboard and ctx.is_main:
            require_tensorboard()  # fail before anything is written
        options.check(ctx.device.type)
        _configure_torch(options, ctx.device)
        resumed = ckpt.load(options.resume) if options.resume else None
        recipe = _recipe_to_run(recipe, resumed, options)
        folder = RunFolder.open(options, recipe.name, ctx, resuming=resumed is not None)
        with folder.removed_on_early_failure():
            summary = Trainer(recipe, options, ctx, folder, resumed, teacher=teacher).run()
        distributed.barrier(ctx)  # leave together: rank 0 may still be writing the checkpoint
        return summary
    finally:
        torch.use_deterministic_algorithms(deterministic[0], warn_only=deterministic[1])
        distributed.teardown(ctx)


def _configure_torch(options: RunOptions, device: torch.device) -> None:
    """Threads and deterministic kernels (``train`` restores the deterministic flags after)."""
    if options.threads:
        torch.set_num_threads(options.threads)
    if options.deterministic:
        if device.type == "cuda":
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.backends.cudnn.benchmark = False
        torch.use_deterministic_algorithms(True, warn_only=True)


def _recipe_to_run(recipe: Recipe | None, resumed: dict | None, options: RunOptions) -> Recipe:
    """The given recipe, or when resuming the checkpoint's own (``recipe`` must then equal it)."""
    if resumed is None:
        if recipe is None:
            raise ValueError("train() needs a recipe or options.resume")
        return recipe
    stored = ckpt.recipe_of(resumed, options.resume)
    if options.resume_batch_size:
        stored = dataclasses.replace(stored, batch_size=options.resume_batch_size)
    if recipe is not None and recipe.to_dict() != stored.to_dict():
        changed = sorted(k for k, v in recipe.to_dict().items() if stored.to_dict()[k] != v)
        raise CheckpointError(
            f"--resume continues the run's own recipe; these fields differ from the checkpoint: "
            f"{', '.join(changed)} (start a new run to change them)")
    return stored


class Trainer:
    """State of one run; see :func:`train` and the module docstring."""

    def __init__(self, recipe: Recipe, options: RunOptions, ctx: distributed.Context, folder: RunFolder,
                 resumed: dict | None = None, teacher: torch.nn.Module | None = None):
        self.recipe, self.options, self.ctx, self.device = recipe, options, ctx, ctx.device
        self.folder, self.out = folder, folder.path
        self.logs = []  # per-epoch record sinks (rank 0): metrics.jsonl, TensorBoard
        # Batch and learning rate across processes; a resumed run keeps its LR factor.
        self.batch_size = recipe.batch_size
        self.global_batch = recipe.batch_size * ctx.world_size
        self.lr_factor = (resumed["progress"]["lr_factor"] if resumed is not None else
                          schedule.batch_scaling_factor(recipe.lr_scaling, self.global_batch, recipe.batch_size))
        self._load_data()
        self.progress = {"epoch": 0, "epoch_position": 0, "global_step": 0, "lr": self.lr_at(0),
                         "order_seed": recipe.seed, "best_val_error": None, "best_epoch": None,
                         "test_error_at_best": None, "epoch_totals": [0.0, 0.0, 0.0], "elapsed_s": 0.0,
                         "lr_factor": self.lr_factor, "global_batch_size": self.global_batch}
        self._build_model(resumed)
        spec = teacher if teacher is not None else recipe.teacher
        self.teacher = Teacher.from_spec(spec, self.device, self.normalization) if spec else None

    # -- set-up --------------------------------------------------------------------------------

    def _load_data(self) -> None:
        """The splits, their normalisation and the steps per epoch.

        With --download under torchrun, local rank 0 of each machine fetches while the others
        wait; machines sharing a data folder take turns under data.download's lock.
        """
        recipe, options, ctx = self.recipe, self.options, self.ctx
        if options.download and not ctx.is_node_main:
            distributed.barrier(ctx)
        self.train_set = load_split(recipe, recipe.train_split, options, recipe.max_train_samples)
        self.val_set, self.test_set = (load_split(recipe, split, options, recipe.max_eval_samples) if split else None
                                       for split in (recipe.val_split, recipe.test_split))
        if options.download and ctx.is_node_main:
            distributed.barrier(ctx)
        self.normalization = input_normalization(recipe, self.train_set)
        self.steps_per_epoch = len(self.train_set) // self.global_batch
        if self.steps_per_epoch < 1:
            raise RecipeError(f"recipe {recipe.name}: batch_size {self.batch_size} x {ctx.world_size} processes "
                              f"is larger than the training split: it has {len(self.train_set)} samples, fewer "
                              f"than one global batch of {self.global_batch}")
        if recipe.augment != "none":
            try:
                data.check_augmentation(recipe.augment, recipe.dataset,
                                        tuple(self.train_set.images.shape[1:]))
            except ValueError as exc:
                raise RecipeError(f"recipe {recipe.name}: {exc}") from None
        self.batches = StepBatches(self.train_set, self.normalization, self.device,
                                   augment=recipe.augment)

    def _build_model(self, resumed: dict | None) -> None:
        """Model, loss, optimizer and loss scaler; the checkpoint's state when resuming; DDP."""
        if resumed is not None:  # before allocating: the stored recipe may ask for anything
            ckpt.check_weights_fit(self.recipe, resumed["model"], self.options.resume)
        model = build_model(self.recipe).to(self.device)
        if self.options.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.loss_fn = loss_function(self.recipe)
        self.optimizer = build_optimizer(self.recipe, model, self.lr_at(0))
        # Loss scaling only for float16 (GPUs without bfloat16); bfloat16 has float32's range.
        float16 = self.options.amp and amp_dtype(self.device) == torch.float16
        self.scaler = torch.amp.GradScaler("cuda") if float16 else None
        if resumed is not None:
            ckpt.restore(resumed, self.options.resume, model, self.optimizer, self.scaler)
            stored_batch = resumed["progress"]["global_batch_size"]
            self.progress.update(resumed["progress"], global_batch_size=self.global_batch)
            if stored_batch != self.global_batch and self.ctx.is_main:
                console.batch_change_note(stored_batch, self.batch_size, self.ctx.world_size, self.lr_factor)
        if self.options.compile:
            model = torch.compile(model)
        if self.ctx.distributed:
            model = convert_sync_batchnorm(model)
            model = torch.nn.parallel.DistributedDataParallel(
                model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        self.model = model
        # Bop's flip counter, for the flip-ratio metric (None without Bop).
        self.bop = self.optimizer.find(optim.Bop) if isinstance(self.optimizer, optim.Combined) else None

    def lr_at(self, epoch: int) -> float:
        """Base learning rate of ``epoch`` (before per-layer scales)."""
        return schedule.recipe_lr(self.recipe, min(epoch, self.recipe.epochs - 1), self.lr_factor)

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
            "normalization": ckpt.normalization_dict(self.normalization),
            "binarynet_version": __version__,
            "torch_version": str(torch.__version__),  # TorchVersion is not a weights_only type
        }

    def save(self, best: bool = False) -> None:
        """Rank 0 writes last.pt (and best.pt as a hard link to the same file when ``best``)."""
        if self.ctx.is_main:
            self.folder.save(ckpt.build(config=self.config(), model=unwrap(self.model), optimizer=self.optimizer,
                                        normalization=self.normalization, progress=self.progress,
                                        grad_scaler=self.scaler), best=best)

    # -- the loop ------------------------------------------------------------------------------

    def run(self) -> dict:
        """Train from the current progress to the last epoch; returns :meth:`summary`."""
        if self.ctx.is_main:
            self._open_logs()
            console.announce(self.recipe, self.progress, steps_per_epoch=self.steps_per_epoch,
                             batch_size=self.batch_size, ctx=self.ctx, out=self.out)
        try:
            with StopRequest() as stop:
                while self.progress["epoch"] < self.recipe.epochs:
                    self._run_epoch(stop)
        finally:
            for log in self.logs:
                if hasattr(log, "close"):
                    log.close()
        summary = self.summary()
        if self.ctx.is_main:
            console.summary_line(summary)
        return summary

    def _open_logs(self) -> None:
        """config.json, and the per-epoch sinks (a resumed run drops the records it redoes)."""
        self.folder.write_config(self.config())
        metrics = MetricsLog(self.folder.file(METRICS_FILE))
        metrics.truncate_after(self.progress["epoch"] + 1)
        self.logs.append(metrics)
        if self.options.tensorboard:
            self.logs.append(TensorBoardLog(self.folder.file(TENSORBOARD_DIR)))

    def _run_epoch(self, stop: StopRequest) -> dict:
        ctx, progress = self.ctx, self.progress
        epoch = progress["epoch"]
        lr = self.lr_at(epoch)
        progress["lr"] = lr
        set_learning_rate(self.optimizer, lr)
        if self.recipe.two_step_epochs:
            two_step.set_step(unwrap(self.model), two_step.step_of_epoch(epoch, self.recipe.two_step_epochs))
        if self.bop is not None and (progress["epoch_position"] == 0 or "flips_at_epoch_start" not in progress):
            progress["flips_at_epoch_start"] = float(self.bop.flip_count())  # one host sync per epoch
        # Drawn on the CPU (the same order on every device), then moved once to where batches are cut.
        order = distributed.epoch_order(len(self.train_set), progress["order_seed"], epoch).to(self.batches.home)
        # This rank's sums of the epoch; a checkpoint holds the sums over all ranks, which
        # rank 0 alone carries on after a resume (whatever the number of processes).
        totals = torch.tensor(progress["epoch_totals"] if ctx.is_main else [0.0, 0.0, 0.0], dtype=torch.float64,
                              device=self.device)  # kept on the device: no synchronisation per step
        bar = ProgressBar(self.steps_per_epoch, f"epoch {epoch + 1}/{self.recipe.epochs}",
                          enabled=ctx.is_main and self.options.progress,
                          initial_step=progress["epoch_position"] // self.global_batch)
        session_start, session_samples = time.monotonic(), 0
        elapsed_before = progress["elapsed_s"]
        self.model.train()
        while progress["epoch_position"] + self.global_batch <= len(order):
            indices = distributed.shard_of_step(order, progress["epoch_position"], self.batch_size, ctx)
            totals += self.train_step(indices)
            progress["global_step"] += 1
            progress["epoch_position"] += self.global_batch
            session_samples += self.global_batch
            self._show_progress(bar, totals, session_samples)
            stopping = distributed.any_rank(ctx, stop.requested) if self._stop_poll_due() else False
            every = self.options.checkpoint_every_steps
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
        return self._end_epoch(epoch, lr, train_totals, elapsed_before + epoch_time, epoch_time, session_samples)

    def _stop_poll_due(self) -> bool:
        """Whether the ranks agree on a stop request after this step (every step but under
        torchrun on GPUs; see STOP_POLL_STEPS). Depends on the step alone: all ranks agree."""
        if not self.ctx.distributed or self.device.type == "cpu":
            return True
        return self.progress["global_step"] % STOP_POLL_STEPS == 0

    def _show_progress(self, bar: ProgressBar, totals: torch.Tensor, session_samples: int) -> None:
        # Loss and accuracy need the device's sums, so only when the bar is due to redraw.
        step = self.progress["epoch_position"] // self.global_batch
        if bar.due(step):
            seen = Totals.from_tensor(totals.cpu())
            bar.update(step, session_samples, seen.loss, 1.0 - seen.error)
        else:
            bar.update(step, session_samples, math.nan, math.nan)

    def train_step(self, indices: torch.Tensor) -> torch.Tensor:
        """One optimizer step on this rank's ``indices``; returns [loss x n, correct, n] (float64).

        The step's randomness comes from generators seeded with (seed, global step, rank).
        """
        step_seed = distributed.mix_seed(self.recipe.seed, self.progress["global_step"], self.ctx.rank)
        torch.manual_seed(step_seed)
        generator = torch.Generator().manual_seed(distributed.mix_seed(step_seed, 1))
        x, y = self.batches.batch(indices, generator)
        if self.options.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(self.device, self.options.amp):
            scores = self.model(x)
            teacher_scores = self.teacher(x) if self.teacher is not None else None
        scores = scores.float()
        loss = self.loss_fn(scores, y)
        if teacher_scores is not None:
            loss = distilled_loss(loss, scores, teacher_scores, self.recipe.distill_weight,
                                  self.recipe.distill_temperature)
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
            # new_full, not torch.tensor(..., device=): a copy from the host would wait for the device.
            return torch.stack([loss.detach().double() * len(y), correct.double(),
                                loss.new_full((), len(y), dtype=torch.float64)])

    def _end_epoch(self, epoch, lr, train_totals, elapsed, epoch_time, samples) -> dict:
        """Validation and test passes, the best-epoch bookkeeping, the record and the checkpoint."""
        progress = self.progress
        # The bare model: DDP's forward broadcasts buffers, and ranks' shards may differ in batch count.
        model = unwrap(self.model)
        kwargs = dict(batch_size=self.recipe.eval_batch_size, device=self.device, ctx=self.ctx, amp=self.options.amp)
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
        if self.bop is not None:
            # Mean over the epoch's steps of the fraction of binary weights that flipped in a step.
            flips = float(self.bop.flip_count()) - progress["flips_at_epoch_start"]
            record["flip_ratio"] = flips / (self.bop.num_weights() * self.steps_per_epoch)
        # The record first: a crash before the checkpoint redoes the epoch and drops the record.
        for log in self.logs:
            log.append(record)
        self.save(best=improved)
        if self.ctx.is_main and self.options.progress:
            console.epoch_line(record, self.recipe.epochs, improved)
        return record

    def _stop(self, signum: int) -> None:
        p = self.progress
        raise TrainingInterrupted(
            f"interrupted by signal {signum} at epoch {p['epoch'] + 1}, global step {p['global_step']}; "
            f"checkpoint saved to {self.folder.file(LAST)}. Resume with: binarynet train --resume --out {self.out}"
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
