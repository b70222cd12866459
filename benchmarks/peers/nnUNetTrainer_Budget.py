"""An nnU-Net v2 trainer variant that fits a CPU-second budget (benchmarks/peers.py, side nnunet).

nnU-Net finds trainers by class name inside its own package, so nnunet_side.py copies this file into
nnunetv2/training/nnUNetTrainer/variants/ of the nnU-Net venv (the documented way to add a trainer). Everything
else is nnU-Net's default nnUNetTrainer: its plans, network, loss, augmentation, SGD + poly schedule, pseudo-Dice
validation and checkpoint_best by the EMA of the pseudo Dice. What changes:

- batch PEERS_NNUNET_BATCH (default 8, as the smp and MONAI sides): for 128 x 128 images nnU-Net's planner fills its
  GPU memory target with a batch of 115; the 1,400 images this side trained on in the 600-s run (results/peers.md)
  would have been about 12 iterations at that batch;
- epochs of PEERS_NNUNET_ITERS training iterations (default 25, 200 images at batch 8, as flexunet_best's epochs;
  nnU-Net's 250) and PEERS_NNUNET_VAL_ITERS validation iterations (default 5, 40 patches; nnU-Net's 50), so that
  several epochs, and so several chances to keep a best checkpoint, fit in the budget after preprocessing;
- the budget: PEERS_BUDGET_CPU_S CPU seconds, of which PEERS_CPU_BEFORE were already spent (planning and
  preprocessing). After the first epoch the number of epochs is set to what the rest of the budget holds at that
  epoch's CPU cost, and the poly schedule to end there; training stops at the first epoch end after which another
  epoch as long as the last would pass the budget (the rule of every side);
- 1 torch thread (nnUNetv2_train -device cpu sets as many as there are cores);
- no final validation export (nnU-Net's `perform_actual_validation`): the benchmark predicts the test split itself
  with nnUNetv2_predict, outside the budget, as every side predicts after its training.
Each epoch appends a line to PEERS_CURVE: epoch, CPU and wall seconds, nnU-Net's validation pseudo Dice and its EMA.
"""
from __future__ import annotations

import json
import os
import resource
import time

import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer


def spent_cpu_s() -> float:
    """CPU seconds of this side so far: what was spent before this process, this process, its waited children."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (float(os.environ.get("PEERS_CPU_BEFORE", "0")) + time.process_time()
            + children.ru_utime + children.ru_stime)


class nnUNetTrainer_Budget(nnUNetTrainer):
    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):  # noqa: B008 (nnU-Net's signature; no *args: it saves
        # the arguments by name)
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.num_iterations_per_epoch = int(os.environ.get("PEERS_NNUNET_ITERS", "25"))
        self.num_val_iterations_per_epoch = int(os.environ.get("PEERS_NNUNET_VAL_ITERS", "5"))
        self.budget_cpu_s = float(os.environ.get("PEERS_BUDGET_CPU_S", "600"))

    def _set_batch_size_and_oversample(self):
        self.batch_size = int(os.environ.get("PEERS_NNUNET_BATCH", "8"))

    def run_training(self):
        torch.set_num_threads(1)
        wall0 = float(os.environ.get("PEERS_WALL0", time.time()))
        self.on_train_start()
        mark = spent_cpu_s()
        while self.current_epoch < self.num_epochs:
            self.on_epoch_start()
            self.on_train_epoch_start()
            train_outputs = [self.train_step(next(self.dataloader_train)) for _ in range(self.num_iterations_per_epoch)]
            self.on_train_epoch_end(train_outputs)
            with torch.no_grad():
                self.on_validation_epoch_start()
                val_outputs = [self.validation_step(next(self.dataloader_val))
                               for _ in range(self.num_val_iterations_per_epoch)]
                self.on_validation_epoch_end(val_outputs)
            self.on_epoch_end()  # checkpoint_best by the EMA pseudo Dice; current_epoch += 1
            now = spent_cpu_s()
            last, mark = now - mark, now
            if self.current_epoch == 1:  # fit the poly schedule to the epochs the rest of the budget holds
                self.num_epochs = max(2, 1 + int((self.budget_cpu_s - now) // last))
                self.lr_scheduler.max_steps = self.num_epochs
            with open(os.environ["PEERS_CURVE"], "a") as curve:
                curve.write(json.dumps({
                    "epoch": self.current_epoch, "cpu_s": round(now, 1), "wall_s": round(time.time() - wall0, 1),
                    "loss": round(float(self.logger.get_value("train_losses", step=-1)), 4),
                    "val_loss": round(float(self.logger.get_value("val_losses", step=-1)), 4),
                    "val_dice": round(float(self.logger.get_value("mean_fg_dice", step=-1)), 4),
                    "val_dice_ema": round(float(self.logger.get_value("ema_fg_dice", step=-1)), 4),
                    "planned_epochs": self.num_epochs, "batch_size": self.batch_size}) + "\n")
            if now + last > self.budget_cpu_s:
                break
        self.on_train_end()

    def perform_actual_validation(self, save_probabilities: bool = False):
        self.print_to_log_file("final validation export skipped (benchmarks/peers.py predicts the test split)")
