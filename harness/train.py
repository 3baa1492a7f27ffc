"""Stage `train`: the one training loop every model in the benchmark goes through.

``csrbench train --model NAME --codec C --level Q`` trains ``NAME`` on
``<data>/hr/<data.train>/`` against ``<data>/lr/<data.train>/x<scale>/<codec>_<level>/``
(with ``data.sub_images``: the sub-image folders of ``harness.data.loader.train_dirs``)
with the shared ``train`` section of params.yaml: L1 (or Charbonnier, eps 1e-3),
Adam (betas 0.9/0.99), lr 2e-4 halved at ``train.milestones``, EMA of the weights
(validation and ``final.pt`` use the EMA), optional gradient clipping and
bf16/fp16 autocast. The loop reads top to bottom like nanoGPT's ``train.py``: setup
(:func:`build_trainer`, resume), then one ``while`` loop; in order lr, eval + checkpoint,
one step (:func:`train_step`: forward/backward, clip, step, EMA), log, stop (the ``while``
condition), then ``final.pt``. ``csrbench bench train`` times :func:`train_step` itself.

Outputs (``--out``, default ``models/<model>/x<s>_<codec>_<level>/``)::

    ckpt_<iteration>.pt  the last ``train.keep_last`` checkpoints (harness/checkpoint.py)
    final.pt             EMA weights + model name/config: what ``csrbench evaluate`` loads
    train.json           iterations, wall time, final loss, scan backend, threads (+ provenance);
                         ``iterations_per_second`` counts the training steps only (data, step, log
                         points), ``iterations_per_second_wall`` adds validation and checkpoints

and ``--curves`` (``results/curves/<model>/x<s>_<codec>_<level>.csv``): iteration,
loss (mean of the iterations since the previous row), lr, val_psnr_y (empty except
at validation iterations), rewritten atomically at each log point for ``dvc plots``.

Exactness. Sample ``k`` of the training stream is a pure function of (seed, k)
(harness.data.loader contract), iteration ``it`` uses samples ``it*B .. it*B+B-1``,
the lr is the pure :func:`get_lr`, and a checkpoint holds model, EMA, optimizer,
GradScaler, every rank's RNG state, the loss history and the partial log window.
So a run killed (even with SIGKILL) and resumed with ``--resume`` (default) ends
with the same weights and history as an uninterrupted one, and 2 DDP ranks with
batch ``B/2`` each match 1 process with batch ``B`` to float tolerance. Resume uses
the newest checkpoint that loads (a truncated file is skipped with a warning). A run
made with other settings (all but ``iterations`` must match: a params edit, a queued
``dvc exp``) is moved to ``<out>/superseded/`` (replacing the one set aside before) and
training starts afresh. A run
whose ``final.pt`` matches the settings returns at once (idempotent ``dvc repro``).

Per-iteration cost is kept to the network: the loss stays on the device (no
``.item()``) until a log point; files are written only at log / validation /
checkpoint points. A NaN or inf loss stops the run at the next log point with a
``RuntimeError`` naming the first bad iteration and the last good checkpoint; no
checkpoint is written after a non-finite loss.

lr schedule: :func:`get_lr` gives ``lr * gamma ** #{m in milestones: it >= m}`` for
the 0-based iteration ``it`` (PyTorch's MultiStepLR stepped after each optimiser
step). BasicSR steps its scheduler *before* the update with a 1-based counter, so
its lr drops one iteration earlier; over 300k iterations the difference is nil.

Determinism: ``torch.backends.cudnn.benchmark`` is off unless the environment sets
``CSRBENCH_CUDNN_BENCHMARK=1``. On CPU, fixed thread counts make runs bit-exact;
tests also set ``torch.use_deterministic_algorithms(True)``.

Multi-GPU / multi-node (DDP). Launch with torchrun; the ``if ddp:`` branch reads
``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK``, uses nccl on CUDA and gloo on CPU, splits
``train.batch_size`` evenly over the ranks (it must divide), and only rank 0
validates, logs and saves (every rank's RNG state goes into rank 0's checkpoint).
``--out`` must be on a file system all nodes share, as resume reads it on every rank::

    # one node, 8 GPUs
    torchrun --standalone --nproc_per_node 8 -m harness.cli train --model mambacsr --codec jpeg --level 10

    # SLURM, 2 nodes x 4 GPUs (sbatch --nodes 2 --ntasks-per-node 1 --gpus-per-node 4)
    head=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
    srun torchrun --nnodes "$SLURM_NNODES" --nproc_per_node 4 \\
        --rdzv_id "$SLURM_JOB_ID" --rdzv_backend c10d --rdzv_endpoint "$head:29500" \\
        -m harness.cli train --model mambacsr --codec jpeg --level 10

References (conventions only; code written anew): karpathy/nanoGPT ``train.py``
(MIT); renyulin-f/MambaCSR @ f71199e1f3b3d7a53a9c9f4cdfe954f36f776e0e
``options/train/MambaCSR_Q10_Final.yaml`` and XPixelGroup/BasicSR @ 8d56e3a0
``basicsr/models/sr_model.py`` (EMA of parameters, Apache-2.0).
"""
from __future__ import annotations

import copy
import functools
import json
import logging
import os
import random
import shutil
import sys
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, NamedTuple

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from tqdm import tqdm

from harness.checkpoint import (FINAL_NAME, CheckpointError, checkpoint_path, find_newest_valid, list_checkpoints,
                                load_checkpoint, prune_checkpoints, save_checkpoint)
from harness.config import Config, Degradation, EvaluateConfig, TrainConfig
from harness.evaluate import build_model, scan_backend, super_resolve
from harness.losses import build_loss
from harness.metrics import psnr_y
from harness.optim import Adam, make_adam

__all__ = ["run", "get_lr", "fingerprint", "TrainData", "image_data", "Trainer", "build_trainer", "train_batches",
           "set_lr", "train_step", "CURVE_HEADER", "CKPT_KEYS"]

log = logging.getLogger(__name__)

CURVE_HEADER = ("iteration", "loss", "lr", "val_psnr_y")
CKPT_KEYS = ("iteration", "model", "ema", "optimizer", "scaler", "rng", "history", "window", "fingerprint",
             "model_name", "model_config", "params")
# train keys that change the weights; the others (logging cadence, keep_last) may differ on resume
_RESULT_KEYS = ("iterations", "batch_size", "lr", "betas", "weight_decay", "milestones", "gamma", "loss",
                "charbonnier_eps", "ema_decay", "grad_clip", "amp", "seed")
# a resume from a checkpoint of another number of ranks reseeds rank r at iteration i with
# seed + r + _RESEED_STRIDE * i (a prime, so no two (rank, iteration) pairs of one run share a seed)
_RESEED_STRIDE = 7919


def get_lr(it: int, t: TrainConfig) -> float:
    """Learning rate of the 0-based iteration ``it`` (MultiStepLR as a pure function).

    Args:
        it: iterations already done.
        t: the ``train`` section (``lr``, ``milestones``, ``gamma``).

    Returns:
        ``t.lr * t.gamma ** (number of milestones <= it)``.
    """
    return t.lr * t.gamma ** sum(1 for m in t.milestones if it >= m)


def fingerprint(cfg: Config, model: str, model_config: dict, degradation: Degradation, scale: int,
                data: dict[str, Any]) -> dict[str, Any]:
    """Everything that decides the trained weights; ``final.pt`` / checkpoints are reused only if it matches.

    ``data`` describes the training data (:attr:`TrainData.fingerprint`).
    """
    t = cfg.to_dict()["train"]
    return json.loads(json.dumps({
        "model": model, "model_config": model_config, "scale": scale, "degradation": degradation.tag,
        "train": {k: t[k] for k in _RESULT_KEYS}, "data": data,
    }))


def _diff(a: dict, b: dict, prefix: str = "") -> list[str]:
    out = []
    for k in sorted(set(a) | set(b)):
        va, vb = a.get(k), b.get(k)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += _diff(va, vb, f"{prefix}{k}.")
        elif va != vb:
            out.append(f"{prefix}{k}: {va!r} -> {vb!r}")
    return out


# ----------------------------------------------------------------------------- small helpers

def _rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    return {"python": random.getstate(),
            "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def _set_rng_state(s: dict[str, Any]) -> None:
    random.setstate(s["python"])
    n = s["numpy"]
    np.random.set_state((n[0], np.asarray(n[1], dtype=np.uint32), n[2], n[3], n[4]))
    torch.set_rng_state(s["torch"])
    if s.get("cuda") is not None and torch.cuda.is_available():
        if len(s["cuda"]) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(s["cuda"])
        else:
            log.warning("checkpoint has CUDA RNG states of %d devices, this machine %d; CUDA RNG not restored",
                        len(s["cuda"]), torch.cuda.device_count())


@torch.no_grad()
def _ema_update(ema: nn.Module, model: nn.Module, decay: float) -> None:
    """ema <- decay * ema + (1 - decay) * model over parameters (BasicSR ``model_ema``); buffers copied."""
    torch._foreach_lerp_(list(ema.parameters()), [p.detach() for p in model.parameters()], 1.0 - decay)
    for eb, b in zip(ema.buffers(), model.buffers()):
        eb.copy_(b)


def _validate(net: nn.Module, pairs: list, scale: int, ev: EvaluateConfig, device: torch.device) -> float:
    """Mean PSNR-Y of ``net`` over ``pairs``, inferred exactly as ``csrbench evaluate`` does (no ensemble)."""
    was_training = net.training
    net.eval()
    vals = [psnr_y(super_resolve(net, lr, scale, ev.tile, ev.tile_overlap, False, device), hr, ev.border(scale))
            for _, lr, hr in pairs]
    net.train(was_training)
    return float(np.mean(vals))


SUPERSEDED = "superseded"


def _set_aside(out: Path, why: str) -> Path:
    """Move the run in ``out`` (checkpoints, final.pt, train.json) to ``out/superseded/``, replacing the
    previous set-aside run; nothing finished is deleted by a settings change, at most the one before it."""
    dest = out / SUPERSEDED
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    for p in [p for _, p in list_checkpoints(out)] + [out / FINAL_NAME, out / "train.json"]:
        if p.is_file():
            p.replace(dest / p.name)
    log.warning("%s; moved that run to %s and training afresh", why, dest)
    return dest


def _write_curves(path: Path, history: list[list]) -> None:
    from harness.provenance import write_csv
    rows = [[it, "" if loss is None else f"{loss:.8g}", "" if lr is None else f"{lr:.8g}",
             "" if val is None else f"{val:.6f}"] for it, loss, lr, val in history]
    write_csv(path, CURVE_HEADER, rows)


def _history_row(history: list[list], iteration: int) -> list:
    if not history or history[-1][0] != iteration:
        history.append([iteration, None, None, None])
    return history[-1]


class TrainData(NamedTuple):
    """What the loop trains and validates on (built lazily: the data is read only if training runs).

    ``dataset()``: a Dataset whose sample ``k`` -> ``(lr, hr)`` float tensors is a pure function of
    (``train.seed``, k) (the harness.data.loader contract that makes resume exact).
    ``val_pairs()``: ``[(name, lr uint8 HxWx3, hr uint8)]``, the validation images.
    ``fingerprint``: what in the data decides the weights (goes into :func:`fingerprint`).
    """
    dataset: Callable[[], torch.utils.data.Dataset]
    val_pairs: Callable[[], list]
    fingerprint: dict[str, Any]


def image_data(cfg: Config, data: Path, scale: int, degradation: Degradation) -> TrainData:
    """The default :class:`TrainData`: seeded patches of ``<data>/hr|lr/<data.train>``, validation on ``data.test[0]``."""
    from harness.data.loader import PairedPatches, load_pairs, train_dirs

    def dataset() -> torch.utils.data.Dataset:
        hr, lr = train_dirs(data, cfg.data.train, scale, degradation.tag, cfg.data.sub_images)
        for d, hint in ((hr, "csrbench prepare"), (lr, "csrbench degrade")):
            if not d.is_dir():
                raise FileNotFoundError(f"{d}: training images not found (run `{hint}` first)")
        return PairedPatches(hr, lr, scale=scale, patch_size=cfg.data.patch_size, seed=cfg.train.seed)

    def val_pairs() -> list:
        ds = cfg.data.test[0]
        return load_pairs(Path(data) / "hr" / ds, Path(data) / "lr" / ds / f"x{scale}" / degradation.tag,
                          cfg.train.val_images)

    return TrainData(dataset, val_pairs, {"train": cfg.data.train, "patch_size": cfg.data.patch_size,
                                          "sub_images": cfg.data.sub_images})


# ----------------------------------------------------------------------------- the parts of one iteration

@dataclass
class Trainer:
    """The network and everything one training step changes (built by :func:`build_trainer`).

    ``model`` is the raw network (what checkpoints hold); ``net`` is what the step calls: ``model``
    itself, or its DDP wrapper once the loop has resumed.
    """
    name: str
    model: nn.Module
    model_config: dict[str, Any]
    ema: nn.Module | None
    optimizer: Adam | torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    amp_dtype: torch.dtype | None
    train: TrainConfig
    net: nn.Module = field(init=False)

    def __post_init__(self) -> None:
        self.net = self.model


def build_trainer(cfg: Config, model: str, device: torch.device | str = "cpu") -> Trainer:
    """Seed, build ``model`` (same init on every rank), its EMA copy, Adam, the GradScaler and the loss.

    Adam is ``harness.optim.Adam`` on CPU (torch's update without torch.optim's 1.3 s import of
    torch._dynamo), ``torch.optim.Adam`` on GPU (see :func:`harness.optim.make_adam`).

    Seeds torch, ``random`` and numpy with ``train.seed`` first (the initial weights depend on it). The
    optimiser's lr is ``train.lr``; the loop sets :func:`get_lr` of each iteration before its step.
    """
    t, device = cfg.train, torch.device(device)
    torch.manual_seed(t.seed)
    random.seed(t.seed)
    np.random.seed(t.seed % 2**32)
    raw_model, model_config = build_model(model)
    raw_model.to(device).train()
    return Trainer(
        name=model, model=raw_model, model_config=model_config,
        ema=copy.deepcopy(raw_model).requires_grad_(False).eval() if t.ema_decay > 0 else None,
        optimizer=make_adam(raw_model.parameters(), device, lr=t.lr, betas=t.betas, weight_decay=t.weight_decay),
        scaler=torch.amp.GradScaler(device.type, enabled=t.amp == "fp16"),
        loss_fn=build_loss(t.loss, t.charbonnier_eps),
        amp_dtype={"bf16": torch.bfloat16, "fp16": torch.float16}.get(t.amp),
        train=t)


def train_batches(cfg: Config, train_data: TrainData, start: int, device: torch.device | str = "cpu",
                  rank: int = 0, world: int = 1) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """``(lr_patch, hr_patch)`` on ``device`` for iterations ``start, start + 1, ...``: this rank's slice.

    Sample ``k`` of the stream depends only on (``train.seed``, k), so the batches after a resume are
    those an uninterrupted run would have drawn. The data set is opened here (not at the first batch).
    """
    from harness.data.loader import batch_sampler
    device = torch.device(device)
    loader = torch.utils.data.DataLoader(
        train_data.dataset(), batch_sampler=batch_sampler(start, cfg.train.batch_size, rank=rank, world_size=world),
        num_workers=cfg.data.num_workers, pin_memory=device.type == "cuda",
        generator=torch.Generator().manual_seed(cfg.train.seed))  # own generator: the global RNG stays untouched
    return ((lr.to(device, non_blocking=True), hr.to(device, non_blocking=True)) for lr, hr in iter(loader))


def set_lr(optimizer: Adam | torch.optim.Optimizer, lr: float) -> None:
    """Set every parameter group's lr (the loop passes :func:`get_lr` of the iteration)."""
    for group in optimizer.param_groups:
        group["lr"] = lr


def train_step(tr: Trainer, lr_patch: torch.Tensor, hr_patch: torch.Tensor) -> torch.Tensor:
    """One iteration on this rank's slice of the batch: forward, loss, backward, clip, step, EMA.

    Args:
        tr: from :func:`build_trainer`; its optimiser's lr is used as set (see :func:`set_lr`).
        lr_patch: (B, 3, h, w) in [0, 1] on the model's device.
        hr_patch: (B, 3, s*h, s*w) in [0, 1].

    Returns:
        The loss, a detached 0-d tensor left on the device (no host sync).
    """
    t = tr.train
    with torch.autocast(lr_patch.device.type, dtype=tr.amp_dtype) if tr.amp_dtype is not None else nullcontext():
        sr = tr.net(lr_patch)
        if sr.shape != hr_patch.shape:
            scale = hr_patch.shape[-1] // lr_patch.shape[-1]
            raise ValueError(f"{tr.name}: output {tuple(sr.shape)} for input {tuple(lr_patch.shape)}, expected "
                             f"{tuple(hr_patch.shape)} (is the model built for x{scale}?)")
        loss = tr.loss_fn(sr.float(), hr_patch)
    tr.scaler.scale(loss).backward()
    if t.grad_clip > 0:
        tr.scaler.unscale_(tr.optimizer)
        torch.nn.utils.clip_grad_norm_(tr.model.parameters(), t.grad_clip)
    tr.scaler.step(tr.optimizer)
    tr.scaler.update()
    tr.optimizer.zero_grad(set_to_none=True)
    if tr.ema is not None:
        _ema_update(tr.ema, tr.model, t.ema_decay)
    return loss.detach()


# ----------------------------------------------------------------------------- the state between iterations

class Ranks(NamedTuple):
    """This process's place in the run: ``ddp`` under torchrun, ``rank`` of ``world`` processes."""
    ddp: bool = False
    rank: int = 0
    world: int = 1

    @property
    def master(self) -> bool:
        return self.rank == 0


@dataclass
class Progress:
    """What the loop carries from one iteration to the next (``history`` and ``window`` go into each checkpoint)."""
    start: int = 0                                   # iteration this process began at (a resumed checkpoint's)
    history: list[list] = field(default_factory=list)  # curve rows [iteration, loss, lr, val_psnr_y]
    window: list[torch.Tensor] = field(default_factory=list)  # device losses since the last log point
    last_good: Path | None = None                    # newest checkpoint written or resumed from
    wall_before: float = 0.0                         # seconds of the processes before this one
    t0: float = field(default_factory=time.perf_counter)  # this process's clock start
    paused: float = 0.0                              # seconds of this process in validation and checkpoints


@contextmanager
def _outside_training(p: Progress, device: torch.device) -> Iterator[None]:
    """Time spent inside is not training throughput (validation, checkpoints): counted in ``p.paused``."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)  # the queued steps belong to training, not to this pause
    t = time.perf_counter()
    try:
        yield
    finally:
        p.paused += time.perf_counter() - t


def _already_trained(final_path: Path, fp: dict[str, Any], model: str) -> bool:
    """Whether ``final.pt`` was made with these settings (idempotent ``dvc repro``)."""
    if not final_path.is_file():
        return False
    try:
        done = load_checkpoint(final_path, ("fingerprint",))
    except CheckpointError as e:
        log.warning("%s: ignoring %s", model, e)
        return False
    if done["fingerprint"] == fp:
        log.info("%s: already trained (%s matches the settings); nothing to do", model, final_path)
        return True
    log.warning("%s: %s was made with other settings (%s); training again", model, final_path,
                "; ".join(_diff(done["fingerprint"], fp)))
    return False


def _delete_old_run(out: Path) -> None:
    for _, p in list_checkpoints(out):
        log.warning("--no-resume: deleting old checkpoint %s", p)
        p.unlink()
    (out / FINAL_NAME).unlink(missing_ok=True)


def _resume(tr: Trainer, out: Path, fp_resume: dict[str, Any], resume: bool, ranks: Ranks,
            device: torch.device) -> Progress:
    """Load the newest valid checkpoint in ``out`` made with these settings into ``tr``; its progress.

    A checkpoint made with other settings (a params edit, a queued experiment) sets that run aside
    (:func:`_set_aside`) and training starts afresh. Restores every RNG of this rank, or reseeds if
    the checkpoint came from another number of ranks.
    """
    t = tr.train
    found = find_newest_valid(out, CKPT_KEYS) if resume else None
    if found is not None and found[1]["fingerprint"] != fp_resume:
        if ranks.master:
            _set_aside(out, f"{found[0].name} was made with other settings "
                            f"({'; '.join(_diff(found[1]['fingerprint'], fp_resume))})")
        if ranks.ddp:
            dist.barrier()
        found = None
    if found is None:
        return Progress()
    last_good, ck = found
    if ck["iteration"] > t.iterations:
        raise RuntimeError(f"{last_good} is at iteration {ck['iteration']}, past train.iterations {t.iterations}")
    tr.model.load_state_dict(ck["model"])
    if tr.ema is not None:
        tr.ema.load_state_dict(ck["ema"])
    tr.optimizer.load_state_dict(ck["optimizer"])
    if ck["scaler"] is not None:
        tr.scaler.load_state_dict(ck["scaler"])
    rngs = ck["rng"]
    if len(rngs) == ranks.world:
        _set_rng_state(rngs[ranks.rank])
    else:
        log.warning("%s holds RNG states of %d ranks, this run has %d; reseeding", last_good, len(rngs), ranks.world)
        torch.manual_seed(t.seed + ranks.rank + _RESEED_STRIDE * ck["iteration"])
    if ranks.master:
        log.info("%s: resuming from %s (iteration %d)", tr.name, last_good, ck["iteration"])
    return Progress(start=ck["iteration"], history=ck["history"], window=[w.to(device) for w in ck["window"]],
                    last_good=last_good, wall_before=ck.get("wall_seconds", 0.0))


# ----------------------------------------------------------------------------- log, validate, checkpoint

def _log_point(it: int, p: Progress, tr: Trainer, curves: Path, ranks: Ranks, pbar: tqdm) -> None:
    """After ``it`` iterations: pull the window of losses to the host, check them, record a curve row."""
    losses = torch.stack([w.float() for w in p.window])
    if ranks.ddp:
        dist.all_reduce(losses)
        losses /= ranks.world
    losses = losses.cpu().tolist()
    first = it - len(losses)
    for i, v in enumerate(losses):
        if not np.isfinite(v):
            raise RuntimeError(
                f"{tr.name}: loss is {v} at iteration {first + i + 1} (of {tr.train.iterations}); training stopped. "
                f"Last good checkpoint: {p.last_good if p.last_good else 'none (no checkpoint written yet)'}. "
                "Lower train.lr, set train.grad_clip, or check the data.")
    row = _history_row(p.history, it)
    row[1], row[2] = float(np.mean(losses)), get_lr(it - 1, tr.train)
    p.window = []
    if ranks.master:
        _write_curves(curves, p.history)
        pbar.set_postfix(loss=f"{row[1]:.4g}", lr=f"{row[2]:.3g}", refresh=False)


def _validation_point(it: int, p: Progress, tr: Trainer, val_pairs: Callable[[], list], scale: int,
                      ev: EvaluateConfig, curves: Path, device: torch.device) -> None:
    """Validation PSNR-Y of the EMA (else raw) weights at ``it``, into the history and the curves (rank 0)."""
    value = _validate(tr.ema if tr.ema is not None else tr.model, val_pairs(), scale, ev, device)
    _history_row(p.history, it)[3] = value
    _write_curves(curves, p.history)
    log.info("%s: iteration %d, validation PSNR-Y %.3f dB (%s)", tr.name, it, value,
             "EMA" if tr.ema is not None else "raw weights")


def _checkpoint(it: int, p: Progress, tr: Trainer, cfg: Config, out: Path, fp_resume: dict[str, Any],
                ranks: Ranks) -> None:
    """Checkpoint at ``it``; all ranks take part (their RNG states are gathered to rank 0, which saves)."""
    state = _rng_state()
    rngs = [state]
    if ranks.ddp:
        rngs = [None] * ranks.world
        dist.all_gather_object(rngs, state)
    if not ranks.master:
        return
    p.last_good = save_checkpoint(checkpoint_path(out, it), {
        "iteration": it, "model": tr.model.state_dict(), "ema": tr.ema.state_dict() if tr.ema is not None else None,
        "optimizer": tr.optimizer.state_dict(), "scaler": tr.scaler.state_dict() if tr.scaler.is_enabled() else None,
        "lr": get_lr(it, tr.train), "rng": rngs, "history": p.history, "window": p.window, "fingerprint": fp_resume,
        "model_name": tr.name, "model_config": tr.model_config, "params": cfg.to_dict(),
        "wall_seconds": p.wall_before + time.perf_counter() - p.t0, "world_size": ranks.world})
    prune_checkpoints(out, tr.train.keep_last)


# ----------------------------------------------------------------------------- the stage

def _init_ddp(device: torch.device, batch_size: int) -> tuple[Ranks, torch.device, bool]:
    """Join the torchrun group if ``RANK`` is set; returns (ranks, this rank's device, whether we created the group)."""
    if int(os.environ.get("RANK", -1)) == -1:
        return Ranks(), device, False
    ranks = Ranks(True, int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]))
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(device)
    own_group = False
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
        own_group = True
    if batch_size % ranks.world:
        raise ValueError(f"train.batch_size {batch_size} must be divisible by WORLD_SIZE {ranks.world}")
    return ranks, device, own_group


def run(cfg: Config, model: str, degradation: Degradation, scale: int, out: Path, curves: Path, data: Path,
        resume: bool = True, device: torch.device | str = "cpu", train_data: TrainData | None = None) -> Path:
    """Train ``model`` on one degradation; write checkpoints, ``final.pt``, ``train.json`` and the curves CSV.

    Args:
        cfg: the run's :class:`harness.config.Config` (``train``, ``data``, ``evaluate`` sections).
        model: name from ``harness.models.list_models()``.
        degradation: :class:`harness.config.Degradation` of the training LR images.
        scale: SR factor.
        out: checkpoint folder.
        curves: loss / validation CSV.
        data: the data folder (``hr/``, ``lr/``).
        resume: continue from the newest valid checkpoint in ``out`` (else start afresh, deleting old ones).
        device: torch device (under torchrun with CUDA, each rank uses ``cuda:LOCAL_RANK``).
        train_data: what to train on; default :func:`image_data` of ``data`` (``csrbench textzoom-train``
            passes TextZoom's).

    Returns:
        Path of ``final.pt``.

    Raises:
        RuntimeError: non-finite loss (names the iteration and the last good checkpoint), or a checkpoint
            made with other settings.
    """
    torch.backends.cudnn.benchmark = os.environ.get("CSRBENCH_CUDNN_BENCHMARK") == "1"
    ranks, device, own_group = _init_ddp(torch.device(device), cfg.train.batch_size)
    try:
        if train_data is None:
            train_data = image_data(cfg, Path(data), scale, degradation)
        return _train(cfg, model, degradation, scale, Path(out), Path(curves), train_data, resume, device, ranks)
    finally:
        if own_group:
            dist.destroy_process_group()


def _train(cfg: Config, model: str, degradation: Degradation, scale: int, out: Path, curves: Path,
           train_data: TrainData, resume: bool, device: torch.device, ranks: Ranks) -> Path:
    """The loop itself, on one rank (see :func:`run` for the arguments)."""
    t = cfg.train
    final_path = out / FINAL_NAME

    # -- setup: model, EMA, optimiser (same init on every rank); done already?; resume
    tr = build_trainer(cfg, model, device)
    fp = fingerprint(cfg, model, tr.model_config, degradation, scale, train_data.fingerprint)
    fp_resume = {**fp, "train": {k: v for k, v in fp["train"].items() if k != "iterations"}}
    if resume and _already_trained(final_path, fp, model):
        return final_path
    if not resume and ranks.master:
        _delete_old_run(out)
    if ranks.ddp:
        dist.barrier()
    torch.manual_seed(t.seed + ranks.rank)   # training stream of this rank (drop-path etc.)
    p = _resume(tr, out, fp_resume, resume, ranks, device)
    if ranks.ddp:
        tr.net = nn.parallel.DistributedDataParallel(
            tr.model, device_ids=[device.index] if device.type == "cuda" else None)
    batches = train_batches(cfg, train_data, p.start, device, ranks.rank, ranks.world)
    val_pairs = functools.cache(train_data.val_pairs)  # read at the first validation

    # -- the loop: lr, eval + checkpoint, step, log, stop
    pbar = tqdm(total=t.iterations, initial=p.start, desc=model, file=sys.stderr, disable=not ranks.master,
                dynamic_ncols=True, mininterval=1.0)
    threads = torch.get_num_threads()
    p.t0 = time.perf_counter()
    it = p.start
    try:
        while it < t.iterations:
            # lr of this iteration (pure function of it)
            set_lr(tr.optimizer, get_lr(it, t))
            # eval + checkpoint (not at the iteration we resumed from: that one is done)
            if it > p.start and it % t.val_every == 0 and ranks.master:
                with _outside_training(p, device):
                    _validation_point(it, p, tr, val_pairs, scale, cfg.evaluate, curves, device)
            if it > p.start and it % t.ckpt_every == 0:
                with _outside_training(p, device):
                    _checkpoint(it, p, tr, cfg, out, fp_resume, ranks)
            # forward / backward / clip / step / EMA on this rank's slice of the global batch
            p.window.append(train_step(tr, *next(batches)))
            it += 1
            pbar.update(1)
            # log (the only host sync: at log points)
            if it % t.log_every == 0 or it % t.ckpt_every == 0 or it == t.iterations:
                _log_point(it, p, tr, curves, ranks, pbar)
        # stop: final validation and checkpoint, then final.pt with the EMA weights
        if p.window:
            _log_point(it, p, tr, curves, ranks, pbar)
        if (it > p.start or not p.history or p.history[-1][3] is None) and ranks.master:
            with _outside_training(p, device):
                _validation_point(it, p, tr, val_pairs, scale, cfg.evaluate, curves, device)
        if it > p.start or p.last_good is None:
            with _outside_training(p, device):
                _checkpoint(it, p, tr, cfg, out, fp_resume, ranks)
    finally:
        pbar.close()
    wall = time.perf_counter() - p.t0
    if torch.get_num_threads() != threads:
        log.warning("torch's intra-op thread count changed during training from %d to %d (an OpenMP runtime shared "
                    "with a compiled kernel, e.g. numba's omp layer, reset it); on a loaded CPU this costs a lot",
                    threads, torch.get_num_threads())
    if ranks.master:
        _save_final(cfg, tr, degradation, scale, out, it, p, fp, wall, threads, device, ranks)
    return final_path


def _save_final(cfg: Config, tr: Trainer, degradation: Degradation, scale: int, out: Path, it: int, p: Progress,
                fp: dict[str, Any], wall: float, threads: int, device: torch.device, ranks: Ranks) -> None:
    """``final.pt`` (EMA weights, else raw, + model name/config: what evaluate loads) and ``train.json``."""
    from harness.provenance import write_json
    final_path = out / FINAL_NAME
    weights = (tr.ema if tr.ema is not None else tr.model).state_dict()
    save_checkpoint(final_path, {
        "model_name": tr.name, "model_config": tr.model_config, "state_dict": weights, "ema": tr.ema is not None,
        "iterations": it, "scale": scale, "degradation": {"codec": degradation.codec, "level": degradation.level},
        "fingerprint": fp, "params": cfg.to_dict(), "history": p.history})
    final_loss = next((r[1] for r in reversed(p.history) if r[1] is not None), None)
    final_val = next((r[3] for r in reversed(p.history) if r[3] is not None), None)
    done = it - p.start
    training = wall - p.paused
    backend = scan_backend(device)
    write_json(out / "train.json", {
        "model": tr.name, "scale": scale, "codec": degradation.codec, "level": degradation.level,
        "profile": cfg.profile, "iterations": it, "iterations_this_run": done, "resumed_from": p.start,
        "wall_seconds": p.wall_before + wall, "wall_seconds_this_run": wall,
        # throughput of the steps alone (data, forward/backward/step/EMA, log points), then of the wall
        # clock, which adds validation and checkpoints (issue 20.7: 0.72 vs 2.41 s/it for smoke SwinIR)
        "train_seconds_this_run": training, "validation_checkpoint_seconds_this_run": p.paused,
        "iterations_per_second": done / training if training > 0 and done else None,
        "iterations_per_second_wall": done / wall if wall > 0 and done else None,
        "final_loss": final_loss, "final_val_psnr_y": final_val, "backend": backend,
        "torch_threads": threads, "torch_threads_at_end": torch.get_num_threads(), "world_size": ranks.world,
        "batch_size": cfg.train.batch_size, "patch_size": cfg.data.patch_size, "ema": tr.ema is not None,
        "final": str(final_path),
    }, cfg=cfg, device=device, scan_backend=backend)
