"""Stage `train`: the one training loop every model in the benchmark goes through.

``csrbench train --model NAME --codec C --level Q`` trains ``NAME`` on
``<data>/hr/<data.train>/`` against ``<data>/lr/<data.train>/x<scale>/<codec>_<level>/``
(with ``data.sub_images``: the sub-image folders of ``harness.data.loader.train_dirs``)
with the shared ``train`` section of params.yaml: L1 (or Charbonnier, eps 1e-3),
Adam (betas 0.9/0.99), lr 2e-4 halved at ``train.milestones``, EMA of the weights
(validation and ``final.pt`` use the EMA), optional gradient clipping and
bf16/fp16 autocast. The loop reads top to bottom like nanoGPT's ``train.py``: one
``while`` loop; in order lr, eval + checkpoint, forward/backward, clip, step,
EMA, log, stop (the ``while`` condition).

Outputs (``--out``, default ``models/<model>/x<s>_<codec>_<level>/``)::

    ckpt_<iteration>.pt  the last ``train.keep_last`` checkpoints (harness/checkpoint.py)
    final.pt             EMA weights + model name/config: what ``csrbench evaluate`` loads
    train.json           iterations, wall time, final loss, scan backend, threads (+ provenance)

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
import json
import logging
import os
import random
import shutil
import sys
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Callable, NamedTuple

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from tqdm import tqdm

from harness.checkpoint import (FINAL_NAME, CheckpointError, checkpoint_path, find_newest_valid, list_checkpoints,
                                load_checkpoint, prune_checkpoints, save_checkpoint)
from harness.evaluate import build_model, scan_backend, super_resolve
from harness.losses import build_loss
from harness.metrics import psnr_y

__all__ = ["run", "get_lr", "fingerprint", "TrainData", "image_data", "CURVE_HEADER", "CKPT_KEYS"]

log = logging.getLogger(__name__)

CURVE_HEADER = ("iteration", "loss", "lr", "val_psnr_y")
CKPT_KEYS = ("iteration", "model", "ema", "optimizer", "scaler", "rng", "history", "window", "fingerprint",
             "model_name", "model_config", "params")
# train keys that change the weights; the others (logging cadence, keep_last) may differ on resume
_RESULT_KEYS = ("iterations", "batch_size", "lr", "betas", "weight_decay", "milestones", "gamma", "loss",
                "charbonnier_eps", "ema_decay", "grad_clip", "amp", "seed")


def get_lr(it: int, t: Any) -> float:
    """Learning rate of the 0-based iteration ``it`` (MultiStepLR as a pure function).

    Args:
        it: iterations already done.
        t: the ``train`` section (``lr``, ``milestones``, ``gamma``).

    Returns:
        ``t.lr * t.gamma ** (number of milestones <= it)``.
    """
    return t.lr * t.gamma ** sum(1 for m in t.milestones if it >= m)


def fingerprint(cfg: Any, model: str, model_config: dict, degradation: Any, scale: int,
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


def _validate(net: nn.Module, pairs: list, scale: int, ev: Any, device: torch.device) -> float:
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


def image_data(cfg: Any, data: Path, scale: int, degradation: Any) -> TrainData:
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
        pairs = load_pairs(Path(data) / "hr" / ds, Path(data) / "lr" / ds / f"x{scale}" / degradation.tag)
        return pairs[: cfg.train.val_images]

    return TrainData(dataset, val_pairs, {"train": cfg.data.train, "patch_size": cfg.data.patch_size,
                                          "sub_images": cfg.data.sub_images})


# ----------------------------------------------------------------------------- the stage

def run(cfg: Any, model: str, degradation: Any, scale: int, out: Path, curves: Path, data: Path,
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
    t, out, curves = cfg.train, Path(out), Path(curves)
    device = torch.device(device)
    torch.backends.cudnn.benchmark = os.environ.get("CSRBENCH_CUDNN_BENCHMARK") == "1"

    # -- DDP: torchrun sets RANK / WORLD_SIZE / LOCAL_RANK
    ddp = int(os.environ.get("RANK", -1)) != -1
    own_group = False
    rank, world = 0, 1
    if ddp:
        rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        if device.type == "cuda":
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
            torch.cuda.set_device(device)
        if not dist.is_initialized():
            dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
            own_group = True
        if t.batch_size % world:
            raise ValueError(f"train.batch_size {t.batch_size} must be divisible by WORLD_SIZE {world}")
    try:
        if train_data is None:
            train_data = image_data(cfg, Path(data), scale, degradation)
        return _train(cfg, model, degradation, scale, out, curves, train_data, resume, device, ddp, rank, world)
    finally:
        if own_group:
            dist.destroy_process_group()


def _train(cfg: Any, model: str, degradation: Any, scale: int, out: Path, curves: Path, train_data: TrainData,
           resume: bool, device: torch.device, ddp: bool, rank: int, world: int) -> Path:
    """The loop itself, on one rank (see :func:`run` for the arguments)."""
    from harness.data.loader import batch_sampler
    from harness.provenance import write_json

    t = cfg.train
    master = rank == 0
    final_path = out / FINAL_NAME

    # -- model (same init on every rank), EMA, fingerprint
    torch.manual_seed(t.seed)
    random.seed(t.seed)
    np.random.seed(t.seed % 2**32)
    raw_model, model_config = build_model(model)
    fp = fingerprint(cfg, model, model_config, degradation, scale, train_data.fingerprint)
    fp_resume = {**fp, "train": {k: v for k, v in fp["train"].items() if k != "iterations"}}

    # -- already done? (idempotent under dvc repro; --no-resume always trains afresh)
    if resume and final_path.is_file():
        try:
            done = load_checkpoint(final_path, ("fingerprint",))
            if done["fingerprint"] == fp:
                log.info("%s: already trained (%s matches the settings); nothing to do", model, final_path)
                return final_path
            log.warning("%s: %s was made with other settings (%s); training again", model, final_path,
                        "; ".join(_diff(done["fingerprint"], fp)))
        except CheckpointError as e:
            log.warning("%s: ignoring %s", model, e)

    if not resume and master:
        for _, p in list_checkpoints(out):
            log.warning("--no-resume: deleting old checkpoint %s", p)
            p.unlink()
        final_path.unlink(missing_ok=True)
    if ddp:
        dist.barrier()

    raw_model.to(device).train()
    ema = copy.deepcopy(raw_model).requires_grad_(False).eval() if t.ema_decay > 0 else None
    optimizer = torch.optim.Adam(raw_model.parameters(), lr=t.lr, betas=t.betas, weight_decay=t.weight_decay)
    scaler = torch.amp.GradScaler(device.type, enabled=t.amp == "fp16")
    amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(t.amp)
    loss_fn = build_loss(t.loss, t.charbonnier_eps)

    # -- resume from the newest valid checkpoint
    start, history, window, wall_before, last_good = 0, [], [], 0.0, None
    torch.manual_seed(t.seed + rank)   # training stream of this rank (drop-path etc.)
    found = find_newest_valid(out, CKPT_KEYS) if resume else None
    if found is not None and found[1]["fingerprint"] != fp_resume:
        # settings changed (dvc repro after a params edit, a queued experiment): keep the old run, start afresh
        if master:
            _set_aside(out, f"{found[0].name} was made with other settings "
                            f"({'; '.join(_diff(found[1]['fingerprint'], fp_resume))})")
        if ddp:
            dist.barrier()
        found = None
    if found is not None:
        last_good, ck = found
        if ck["iteration"] > t.iterations:
            raise RuntimeError(f"{last_good} is at iteration {ck['iteration']}, past train.iterations {t.iterations}")
        raw_model.load_state_dict(ck["model"])
        if ema is not None:
            ema.load_state_dict(ck["ema"])
        optimizer.load_state_dict(ck["optimizer"])
        if ck["scaler"] is not None:
            scaler.load_state_dict(ck["scaler"])
        rngs = ck["rng"]
        if len(rngs) == world:
            _set_rng_state(rngs[rank])
        else:
            log.warning("%s holds RNG states of %d ranks, this run has %d; reseeding", last_good, len(rngs), world)
            torch.manual_seed(t.seed + rank + 7919 * ck["iteration"])
        start, history, window = ck["iteration"], ck["history"], [w.to(device) for w in ck["window"]]
        wall_before = ck.get("wall_seconds", 0.0)
        if master:
            log.info("%s: resuming from %s (iteration %d)", model, last_good, start)

    net = raw_model
    if ddp:
        net = nn.parallel.DistributedDataParallel(raw_model, device_ids=[device.index] if device.type == "cuda" else None)

    # -- data: sample k of the stream depends only on (seed, k); this rank takes its slice of each batch
    dataset = train_data.dataset()
    loader = torch.utils.data.DataLoader(
        dataset, batch_sampler=batch_sampler(start, t.batch_size, rank=rank, world_size=world),
        num_workers=cfg.data.num_workers, pin_memory=device.type == "cuda",
        generator=torch.Generator().manual_seed(t.seed))  # own generator: the global RNG stays untouched
    batches = iter(loader)
    val_pairs = None

    def save(it: int) -> Path | None:
        """Checkpoint at ``it`` (all ranks take part: RNG states are gathered to rank 0)."""
        state = _rng_state()
        rngs = [state]
        if ddp:
            rngs = [None] * world
            dist.all_gather_object(rngs, state)
        if not master:
            return None
        path = save_checkpoint(checkpoint_path(out, it), {
            "iteration": it, "model": raw_model.state_dict(), "ema": ema.state_dict() if ema is not None else None,
            "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict() if scaler.is_enabled() else None,
            "lr": get_lr(it, t), "rng": rngs, "history": history, "window": window, "fingerprint": fp_resume,
            "model_name": model, "model_config": model_config, "params": cfg.to_dict(),
            "wall_seconds": wall_before + time.perf_counter() - t0, "world_size": world})
        prune_checkpoints(out, t.keep_last)
        return path

    def flush(it: int) -> None:
        """Log point after ``it`` iterations: pull the window of losses to the host, check, record."""
        nonlocal window
        losses = torch.stack([w.float() for w in window])
        if ddp:
            dist.all_reduce(losses)
            losses /= world
        losses = losses.cpu().tolist()
        first = it - len(losses)
        for i, v in enumerate(losses):
            if not np.isfinite(v):
                raise RuntimeError(
                    f"{model}: loss is {v} at iteration {first + i + 1} (of {t.iterations}); training stopped. "
                    f"Last good checkpoint: {last_good if last_good else 'none (no checkpoint written yet)'}. "
                    "Lower train.lr, set train.grad_clip, or check the data.")
        row = _history_row(history, it)
        row[1], row[2] = float(np.mean(losses)), get_lr(it - 1, t)
        window = []
        if master:
            _write_curves(curves, history)
            pbar.set_postfix(loss=f"{row[1]:.4g}", lr=f"{row[2]:.3g}", refresh=False)

    def validate(it: int) -> None:
        nonlocal val_pairs
        if not master:
            return
        if val_pairs is None:
            val_pairs = train_data.val_pairs()
        value = _validate(ema if ema is not None else raw_model, val_pairs, scale, cfg.evaluate, device)
        _history_row(history, it)[3] = value
        _write_curves(curves, history)
        log.info("%s: iteration %d, validation PSNR-Y %.3f dB (%s)", model, it, value,
                 "EMA" if ema is not None else "raw weights")

    pbar = tqdm(total=t.iterations, initial=start, desc=model, file=sys.stderr, disable=not master,
                dynamic_ncols=True, mininterval=1.0)
    threads = torch.get_num_threads()
    t0 = time.perf_counter()
    it = start
    try:
        while it < t.iterations:
            # lr of this iteration (pure function of it)
            lr = get_lr(it, t)
            for group in optimizer.param_groups:
                group["lr"] = lr
            # eval + checkpoint (not at the iteration we resumed from: that one is done)
            if it > start and it % t.val_every == 0:
                validate(it)
            if it > start and it % t.ckpt_every == 0:
                last_good = save(it) or last_good
            # forward / backward on this rank's slice of the global batch
            lr_patch, hr_patch = next(batches)
            lr_patch = lr_patch.to(device, non_blocking=True)
            hr_patch = hr_patch.to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=amp_dtype) if amp_dtype is not None else nullcontext():
                sr = net(lr_patch)
                if sr.shape != hr_patch.shape:
                    raise ValueError(f"{model}: output {tuple(sr.shape)} for input {tuple(lr_patch.shape)}, "
                                     f"expected {tuple(hr_patch.shape)} (is the model built for x{scale}?)")
                loss = loss_fn(sr.float(), hr_patch)
            scaler.scale(loss).backward()
            # clip, step
            if t.grad_clip > 0:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(raw_model.parameters(), t.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            # EMA
            if ema is not None:
                _ema_update(ema, raw_model, t.ema_decay)
            # log (the only host sync: at log points)
            window.append(loss.detach())
            it += 1
            pbar.update(1)
            if it % t.log_every == 0 or it % t.ckpt_every == 0 or it == t.iterations:
                flush(it)
        # stop: final validation and checkpoint, then final.pt with the EMA weights
        if window:
            flush(it)
        if it > start or not history or history[-1][3] is None:
            validate(it)
        if it > start or last_good is None:
            last_good = save(it) or last_good
    finally:
        pbar.close()
    wall = time.perf_counter() - t0
    if torch.get_num_threads() != threads:
        log.warning("torch's intra-op thread count changed during training from %d to %d (an OpenMP runtime shared "
                    "with a compiled kernel, e.g. numba's omp layer, reset it); on a loaded CPU this costs a lot",
                    threads, torch.get_num_threads())
    if not master:
        return final_path

    weights = (ema if ema is not None else raw_model).state_dict()
    save_checkpoint(final_path, {
        "model_name": model, "model_config": model_config, "state_dict": weights, "ema": ema is not None,
        "iterations": it, "scale": scale, "degradation": {"codec": degradation.codec, "level": degradation.level},
        "fingerprint": fp, "params": cfg.to_dict(), "history": history})
    final_loss = next((r[1] for r in reversed(history) if r[1] is not None), None)
    final_val = next((r[3] for r in reversed(history) if r[3] is not None), None)
    backend = scan_backend(device)
    write_json(out / "train.json", {
        "model": model, "scale": scale, "codec": degradation.codec, "level": degradation.level,
        "profile": cfg.profile, "iterations": it, "iterations_this_run": it - start, "resumed_from": start,
        "wall_seconds": wall_before + wall, "wall_seconds_this_run": wall,
        "iterations_per_second": (it - start) / wall if wall > 0 and it > start else None,
        "final_loss": final_loss, "final_val_psnr_y": final_val, "backend": backend,
        "torch_threads": threads, "torch_threads_at_end": torch.get_num_threads(), "world_size": world, "batch_size": t.batch_size,
        "patch_size": cfg.data.patch_size, "ema": ema is not None, "final": str(final_path),
    }, cfg=cfg, device=device, scan_backend=backend)
    return final_path
