"""On a GPU, a training step never waits for the device (no host synchronisation inside an epoch)."""
import pytest
import torch

from binarynet.train import RunOptions, loop, recipes, train

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU")


@pytest.mark.parametrize("loss, augment, amp", [("squared_hinge", "none", False),
                                               ("cross_entropy", "crop_flip", True)])
def test_training_steps_never_wait_for_the_gpu(tmp_path, monkeypatch, loss, augment, amp):
    original = loop.Trainer.train_step

    def checked(self, indices):
        if self.progress["global_step"] < 2:  # first steps: lazy initialisation may wait
            return original(self, indices)
        torch.cuda.set_sync_debug_mode("error")  # any synchronising call raises
        try:
            return original(self, indices)
        finally:
            torch.cuda.set_sync_debug_mode(0)

    monkeypatch.setattr(loop.Trainer, "train_step", checked)
    recipe = recipes.apply_overrides(recipes.get("synthetic_mlp"), {
        "epochs": 1, "max_train_samples": 1000, "max_eval_samples": 200, "loss": loss,
        "augment": augment})
    summary = train(recipe, RunOptions(out=str(tmp_path / "run"), device="cuda", progress=False, amp=amp))
    assert summary["global_step"] == 10
