"""Training: baseline, input mixup and manifold mixup PreActResNets, and Table 5's two controls (PGD
adversarial training, `train.adversarial`; thermometer encoding, `models.thermometer`), resumable
and reproducible.

The loop follows airbench's recipe for speed: the dataset sits on the device, batches are
augmented there, mixup randomness for a whole epoch is drawn up front on the host and copied
over once, and the loss/accuracy accumulate on the device so the step never waits for the GPU.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from robustbench_mm.common.progress import progress_bar
from robustbench_mm.common.runtime import gpu_settings, resolve_device, seed_everything
from robustbench_mm.common.storage import check_writable_dir, ensure_writable_dir, folder_lock
from robustbench_mm.config import TrainConfig, unused_settings
from robustbench_mm.data.images import DeviceBatches, ImageSet, check_batch_size, load_dataset
from robustbench_mm.errors import MMRobustError, UsageError
from robustbench_mm.models.factory import model_from_config
from robustbench_mm.models.losses import LOSSES
from robustbench_mm.models.metrics import evaluate
from robustbench_mm.models.preact import MixSpec
from robustbench_mm.runs.checkpoints import (
    STATE_FILE, WEIGHT_FILES, load_tensors, parse_state_metadata, save_tensors, save_weights, state_metadata)
from robustbench_mm.runs.meta import META_FILE, RunMeta
from robustbench_mm.train.adversarial import adversarial_examples, adversarial_training_meta
from robustbench_mm.train.fgsm_monitor import fgsm_during_training, resolve_fgsm_examples
from robustbench_mm.train.mixup import eligible_mix_points, soft_targets

# Settings that may differ between a run and its --resume without changing the result.
# (The in-training FGSM only measures, so its subset may change too; each history record names its size.)
RESUME_FREE = {"device", "out", "data_dir", "download", "eval_batch_size", "compile", "fgsm_eval_examples"}


def resume_free(config: TrainConfig) -> set[str]:
    """RESUME_FREE plus the settings of methods other than the run's (`config.unused_settings`)."""
    return RESUME_FREE | unused_settings(config)

# The files a run folder holds that training writes (and --force replaces); nothing else there is touched.
RUN_FILES = (STATE_FILE, META_FILE, *WEIGHT_FILES.values())
REPLACED_DIR = ".replaced-by-force"  # the old run while --force trains its replacement


class TrainingDiverged(MMRobustError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""

    exit_code = 1


def lr_at(config: TrainConfig, epoch: int) -> float:
    """Step schedule: lr x gamma at each milestone (epochs counted from 0)."""
    return config.lr * config.lr_gamma ** sum(epoch >= m for m in config.milestones)


@dataclass
class TrainState:
    """Everything that changes during training and must survive a restart."""

    epoch: int = 0  # epochs completed
    history: list[dict[str, Any]] = field(default_factory=list)
    best: dict[str, Any] | None = None
    mix_rng: np.random.Generator | None = None


class Trainer:
    def __init__(self, config: TrainConfig, progress: bool = True):
        self.config = config
        self.progress = progress
        self.device = resolve_device(config.device)
        self.run_dir = Path(config.out) / config.run_name
        self.use_cuda = self.device.type == "cuda"
        self.gpu_settings = gpu_settings(self.device)  # bf16 autocast and channels-last: CUDA, or the tests' CPU run

    # ---- setup -------------------------------------------------------------------------

    def _load_data(self) -> tuple[ImageSet, ImageSet]:
        c = self.config
        train = load_dataset(c.dataset, True, c.data_dir, c.download).subset(c.n_train)
        test = load_dataset(c.dataset, False, c.data_dir, c.download).subset(c.n_test)
        return train.to(self.device), test.to(self.device)

    def build(self) -> None:
        """Model, optimiser and random generators, freshly seeded; touches no files."""
        c = self.config
        seed_everything(c.seed)
        self.model = model_from_config(c).to(self.device)
        if self.gpu_settings and c.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        if self.use_cuda:
            # Every step has the same shapes (the last partial batch is dropped), so cuDNN's
            # one-off timing of its convolution algorithms pays for itself within the first epoch.
            torch.backends.cudnn.benchmark = True
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=c.lr, momentum=c.momentum,
                                         nesterov=c.nesterov, weight_decay=c.weight_decay)
        self.generator = torch.Generator(device=self.device).manual_seed(c.seed)
        self.state = TrainState(mix_rng=np.random.default_rng(c.seed))
        self.step_model = torch.compile(self.model) if c.compile else self.model
        self.loss_fn = LOSSES[c.loss]
        self.mix_points = eligible_mix_points(c.method, c.mix_layers)
        self.adversarial = c.method == "adversarial"

    # ---- checkpoints -------------------------------------------------------------------

    def _state_tensors(self) -> dict[str, torch.Tensor]:
        tensors = {f"model.{k}": v for k, v in self.model.state_dict().items()}
        for index, param_state in self.optimizer.state_dict()["state"].items():
            for key, value in param_state.items():
                if torch.is_tensor(value):
                    tensors[f"optim.{index}.{key}"] = value
        tensors["rng.data"] = self.generator.get_state()
        return tensors

    def _save_state(self) -> None:
        payload = {
            "epoch": self.state.epoch,
            "history": self.state.history,
            "best": self.state.best,
            "mix_rng": self.state.mix_rng.bit_generator.state,
            "config": self.config.to_dict(),
        }
        save_tensors(self.run_dir / STATE_FILE, self._state_tensors(), state_metadata(payload))

    def _restore_state(self) -> None:
        path = self.run_dir / STATE_FILE
        tensors, metadata = load_tensors(path)
        payload = parse_state_metadata(path, metadata)
        saved = TrainConfig.from_dict(payload["config"]).to_dict()
        ours = self.config.to_dict()
        free = resume_free(self.config)
        differing = sorted(k for k in ours if k not in free and ours[k] != saved[k])
        if differing:
            changes = ", ".join(f"{k}={saved[k]!r} (now {ours[k]!r})" for k in differing)
            raise UsageError(f"--resume with different settings than run {self.config.run_name!r} was started with: "
                             f"{changes}; use the original settings or --force to start over")
        self.model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
        optim_state = self.optimizer.state_dict()
        optim_state["state"] = {}
        for key, value in tensors.items():
            if key.startswith("optim."):
                _, index, name = key.split(".", 2)
                optim_state["state"].setdefault(int(index), {})[name] = value.to(self.device)
        self.optimizer.load_state_dict(optim_state)
        self.generator.set_state(tensors["rng.data"])
        self.state.epoch = int(payload["epoch"])
        self.state.history = list(payload["history"])
        self.state.best = payload["best"]
        self.state.mix_rng.bit_generator.state = payload["mix_rng"]

    def _write_meta(self) -> None:
        c = self.config
        last_metrics = next((h for h in reversed(self.state.history) if "test_accuracy" in h), {})
        checkpoints = {"last": {"file": WEIGHT_FILES["last"], "epoch": self.state.epoch,
                                "test_accuracy": last_metrics.get("test_accuracy"),
                                "test_nll": last_metrics.get("test_nll"),
                                "selection": "weights at the end of the last completed epoch"}}
        if self.state.best is not None:
            checkpoints["best"] = {"file": WEIGHT_FILES["best"], **self.state.best,
                                   "selection": "highest test accuracy seen during training (what the paper reports)"}
        RunMeta(c, self.state.epoch, checkpoints, self.state.history, device=str(self.device),
                method_details=self._method_meta()).write(self.run_dir)

    def _method_meta(self) -> dict[str, Any]:
        """The two controls' settings, spelled out for the tables (they are in `config` too)."""
        c = self.config
        if c.method == "adversarial":
            return {"adversarial_training": adversarial_training_meta(c)}
        if c.method == "thermometer":
            return {"input_encoding": {"kind": "thermometer", "levels": c.thermometer_levels,
                                       "differentiable": False, "bpda_surrogate": "Athalye et al. (2018)"}}
        return {}

    def _prepare_run_dir(self, resume: bool, force: bool) -> bool:
        """Returns True when training should continue from saved state. Writes nothing."""
        has_state = (self.run_dir / STATE_FILE).is_file()
        has_anything = has_state or (self.run_dir / META_FILE).is_file()
        if has_anything and not resume and not force:
            raise UsageError(f"run {str(self.run_dir)!r} already exists; pass --resume to continue it "
                             "or --force to start it over")
        return resume and has_state and not force

    # ---- --force: the old run is set aside, and deleted only once the new run has a checkpoint ----

    @property
    def _set_aside_dir(self) -> Path:
        return self.run_dir / REPLACED_DIR

    def _set_aside_old_run(self) -> None:
        aside = self._set_aside_dir
        aside.mkdir()
        for name in RUN_FILES:
            if (self.run_dir / name).is_file():
                os.replace(self.run_dir / name, aside / name)

    def _restore_old_run(self) -> None:
        """Put the set-aside run back exactly as it was, dropping whatever the new run wrote."""
        aside = self._set_aside_dir
        for name in RUN_FILES:
            if (aside / name).is_file():
                os.replace(aside / name, self.run_dir / name)
            else:
                (self.run_dir / name).unlink(missing_ok=True)
        aside.rmdir()

    def _finish_replacing(self) -> None:
        shutil.rmtree(self._set_aside_dir)

    def _recover_interrupted_force(self) -> None:
        """A --force killed before its first checkpoint left the old run aside: put it back; after it, drop it."""
        if not self._set_aside_dir.is_dir():
            return
        if (self.run_dir / META_FILE).is_file():
            self._finish_replacing()
        else:
            self._restore_old_run()

    # ---- the loop ----------------------------------------------------------------------

    def _epoch_mixes(self, steps: int) -> tuple[list[int], torch.Tensor | None]:
        """Mixing points and lambdas for a whole epoch, drawn on the host, copied to the device once."""
        if not self.mix_points:
            return [], None
        rng = self.state.mix_rng
        lams = rng.beta(self.config.alpha, self.config.alpha, size=steps).astype(np.float32)
        layers = [int(self.mix_points[i]) for i in rng.integers(len(self.mix_points), size=steps)]
        lam_tensor = torch.from_numpy(lams)
        if self.use_cuda:
            lam_tensor = lam_tensor.pin_memory()
        return layers, lam_tensor.to(self.device, non_blocking=True)

    def train_step(self, x: torch.Tensor, y: torch.Tensor, mix: MixSpec | None) -> tuple[torch.Tensor, torch.Tensor]:
        """One optimiser step on a batch.

        Returns the detached loss and the number of correct predictions (under mixup each image
        counts lam towards its own label and 1 - lam towards its partner's), both still on the
        device so that the caller never waits for it. With ``--method adversarial`` the batch is first
        replaced by its PGD adversarial examples (`train.adversarial`, model in train mode), and the
        loss and accuracy are those of the adversarial batch.
        """
        c = self.config
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.gpu_settings and c.precision == "bf16"):
            if self.adversarial:
                x = adversarial_examples(self.step_model, x, y, c.adv_eps, c.adv_step_size, c.adv_steps,
                                         self.generator)
            logits = self.step_model(x, mix)
        loss = self.loss_fn(logits, soft_targets(y, c.num_classes, mix))
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        pred = logits.detach().argmax(1)
        hits = (pred == y).float().sum()
        if mix is not None:
            hits = mix.lam * hits + (1 - mix.lam) * (pred == y[mix.perm]).float().sum()
        # A loss can stay finite over non-finite logits (BCE's NaN guard): report those steps as NaN too.
        loss = torch.where(torch.isfinite(logits.detach()).all(), loss.detach(), torch.nan)
        return loss, hits

    def train_epoch(self, batches: DeviceBatches, bar=None) -> dict[str, float]:
        """One pass over `batches` at the current epoch's learning rate; syncs with the device once, at the end."""
        c = self.config
        self.model.train()
        lr = lr_at(c, self.state.epoch)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        steps = len(batches)
        layers, lams = self._epoch_mixes(steps)
        loss_sum = torch.zeros((), device=self.device)
        correct = torch.zeros((), device=self.device)
        first_bad_step = torch.full((), -1, device=self.device, dtype=torch.long)
        start = time.perf_counter()
        for step, (x, y) in enumerate(batches):
            mix = None
            if lams is not None:
                perm = torch.randperm(len(y), device=self.device, generator=self.generator)
                mix = MixSpec(layer=layers[step], lam=lams[step], perm=perm)
            loss, hits = self.train_step(x, y, mix)
            loss_sum += loss
            first_bad_step = torch.where((first_bad_step < 0) & ~torch.isfinite(loss), step, first_bad_step)
            correct += hits
            if bar is not None:
                bar.update(1)
        # Weights can turn non-finite in the last update even when every loss was finite; they are never saved.
        weights_finite = torch.stack([torch.isfinite(t).all() for t in self.model.state_dict().values()
                                      if t.is_floating_point()]).all()
        bad, weights_ok = torch.stack([first_bad_step, weights_finite.long()]).tolist()  # the epoch's only sync
        if bad >= 0 or not weights_ok:
            where = f"loss became non-finite at epoch {self.state.epoch + 1}, step {bad + 1}" if bad >= 0 else \
                f"weights became non-finite in epoch {self.state.epoch + 1}"
            kept = (f"the last good checkpoint (epoch {self.state.epoch}) is kept in {str(self.run_dir)!r}"
                    if self.state.epoch else "nothing was saved")
            raise TrainingDiverged(f"{where}; {kept}; start over with a lower --lr and --force")
        seconds = time.perf_counter() - start
        images = steps * batches.batch_size
        return {"train_loss": loss_sum.item() / steps, "train_accuracy": 100.0 * correct.item() / images,
                "lr": lr, "seconds": seconds, "images_per_second": images / seconds}

    def run(self, resume: bool = False, force: bool = False) -> Path:
        c = self.config
        if resume and force:
            raise UsageError("--resume continues a run and --force starts it over; pass one of them, not both")
        # Everything is checked before any file or folder is touched: a bad input writes nothing.
        train_data, test_data = self._load_data()
        check_batch_size(c.batch_size, len(train_data))
        self._prepare_run_dir(resume, force)
        if self.run_dir.exists():  # --force and --resume write into it (a read-only one ended in a traceback)
            check_writable_dir(self.run_dir, "--out")
        ensure_writable_dir(Path(c.out))
        with folder_lock(self.run_dir):
            self._recover_interrupted_force()
            resuming = self._prepare_run_dir(resume, force)
            self.build()
            if resuming:
                self._restore_state()
                if self.state.epoch >= c.epochs:
                    # A kill between the state write and the weights/meta writes leaves those one epoch behind.
                    save_weights(self.run_dir / WEIGHT_FILES["last"], self.model, self.state.epoch)
                    self._write_meta()
                    self._log(f"{c.run_name}: already complete ({self.state.epoch} epochs)")
                    return self.run_dir
            replacing = force and any((self.run_dir / name).is_file() for name in RUN_FILES)
            if replacing:
                self._set_aside_old_run()
            try:
                self._train(train_data, test_data, replacing)
            except BaseException:
                if replacing and self._set_aside_dir.is_dir():
                    self._restore_old_run()
                raise
        return self.run_dir

    def _train(self, train_data: ImageSet, test_data: ImageSet, replacing: bool) -> None:
        c = self.config
        batches = DeviceBatches(train_data, c.batch_size, self.generator, c.crop_padding, c.flip,
                                channels_last=self.use_cuda and c.channels_last)
        fgsm_examples = resolve_fgsm_examples(c.fgsm_eval_examples, self.device, len(test_data))
        total = (c.epochs - self.state.epoch) * len(batches)
        bar = progress_bar(total=total, desc=c.run_name, unit="step", disable=not self.progress)
        try:
            while self.state.epoch < c.epochs:
                record = {"epoch": self.state.epoch + 1, **self.train_epoch(batches, bar)}
                self.state.epoch += 1
                if self.state.epoch % c.eval_every == 0 or self.state.epoch == c.epochs:
                    metrics = evaluate(self.model, test_data, c.eval_batch_size)
                    record.update(test_accuracy=metrics["accuracy"], test_nll=metrics["nll"])
                    if fgsm_examples:
                        record["fgsm"] = fgsm_during_training(self.model, test_data, fgsm_examples,
                                                              c.eval_batch_size,
                                                              channels_last=self.use_cuda and c.channels_last)
                    if self.state.best is None or metrics["accuracy"] > self.state.best["test_accuracy"]:
                        self.state.best = {"epoch": self.state.epoch, "test_accuracy": metrics["accuracy"],
                                           "test_nll": metrics["nll"]}
                        save_weights(self.run_dir / WEIGHT_FILES["best"], self.model, self.state.epoch)
                self.state.history.append(record)
                self._save_state()
                save_weights(self.run_dir / WEIGHT_FILES["last"], self.model, self.state.epoch)
                self._write_meta()
                if replacing:  # the new run now stands on its own: the old one can go
                    self._finish_replacing()
                    replacing = False
                bar.set_postfix(epoch=f"{self.state.epoch}/{c.epochs}", loss=f"{record['train_loss']:.3f}",
                                acc=f"{record['train_accuracy']:.1f}",
                                test=f"{record.get('test_accuracy', float('nan')):.1f}",
                                img_s=f"{record['images_per_second']:.0f}")
        finally:
            bar.close()
        best = self.state.best or {}
        self._log(f"{c.run_name}: done, test accuracy last {record.get('test_accuracy', float('nan')):.2f}% / "
                  f"best {best.get('test_accuracy', float('nan')):.2f}% (epoch {best.get('epoch')}) -> {self.run_dir}")

    def _log(self, message: str) -> None:
        if self.progress:
            print(message, file=sys.stderr)


def train(config: TrainConfig, resume: bool = False, force: bool = False, progress: bool = True) -> Path:
    """Train one model into ``<config.out>/<config.run_name>/`` and return that folder."""
    return Trainer(config, progress).run(resume=resume, force=force)


