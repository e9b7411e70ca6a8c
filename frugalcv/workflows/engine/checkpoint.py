"""Checkpoints that resume a run bit-exactly: weights, optimizer, schedule, counters,
hooks, the data cursor and every rank's RNG states, written atomically to any fsspec URL.

A checkpoint is one ``torch.save`` file loaded with ``weights_only=True``, so it holds
only tensors and plain Python containers (numpy's RNG state is converted). In a
distributed run every rank takes part in a save (RNG states are gathered to rank 0 with
``all_gather_object``); rank 0 writes; on restore each rank takes back its own RNG state.
"""

from __future__ import annotations

import hashlib
import io
import logging
import random
import re
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from frugalcv.errors import ConfigError, FrugalError
from frugalcv.sharding import storage
from frugalcv.workflows.engine.trainer import HookBase, Trainer

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
_NAME = re.compile(r"step-(\d{8,})\.pt$")


def rank_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The module inside a DDP (or similar ``.module``) wrapper."""
    return model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model


# -- RNG states as weights_only-loadable values -------------------------------------------
def rng_state() -> dict:
    """This process's python, numpy (legacy global), torch CPU and current-CUDA-device generator states."""
    version, internal, gauss_next = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": {"version": version, "internal": torch.tensor(internal, dtype=torch.int64), "gauss_next": gauss_next},
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():  # this rank's device only: others would get a CUDA context
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict) -> None:
    py = state["python"]
    random.setstate((py["version"], tuple(py["internal"].tolist()), py["gauss_next"]))
    npy = state["numpy"]
    np.random.set_state((npy["kind"], npy["keys"].numpy().astype(np.uint32), npy["pos"], npy["has_gauss"],
                         npy["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def gathered_rng_states() -> list[dict]:
    """Every rank's ``rng_state()``, indexed by rank (a collective when distributed)."""
    own = rng_state()
    rank, world = rank_world()
    if world == 1:
        return [own]
    states: list[Any] = [None] * world
    dist.all_gather_object(states, own)
    return states


# -- whole-run state ------------------------------------------------------------------------
def capture_state(trainer: Trainer | None, model: torch.nn.Module, *, optimizer=None, scheduler=None,
                  loader=None, extra: dict | None = None) -> dict:
    """Everything a resume needs; all ranks must call it (it gathers their RNG states)."""
    state: dict[str, Any] = {
        "format": FORMAT_VERSION,
        "model": unwrap(model).state_dict(),
        "world_size": rank_world()[1],
        "rng": gathered_rng_states(),
    }
    if trainer is not None:
        state["trainer"] = trainer.state_dict()  # step, epoch, step_in_epoch, optimizer, hooks
    elif optimizer is not None:
        state["optimizer"] = optimizer.state_dict()
    if scheduler is not None:
        state["scheduler"] = scheduler.state_dict()
    if loader is not None:
        state["loader"] = loader.state_dict()
    if extra:
        state["extra"] = extra
    return state


def save_checkpoint(url: str, state: dict) -> str:
    """Write ``state`` atomically to ``url`` (any fsspec URL); returns the file's sha256."""
    buf = io.BytesIO()
    torch.save(state, buf)
    data = buf.getvalue()
    storage.write_bytes_atomic(url, data)
    return hashlib.sha256(data).hexdigest()


def load_checkpoint(url: str, *, sha256: str | None = None) -> dict:
    """Load with ``weights_only=True`` onto the CPU; checks the digest when given."""
    data = storage.read_bytes(url)
    if sha256 is not None and hashlib.sha256(data).hexdigest() != sha256:
        raise FrugalError(f"{storage.redact(url)}: sha256 differs from the recorded {sha256}")
    from frugalcv.workflows.engine.weights import load_weights_only

    state = load_weights_only(data, url, "checkpoint")
    if not isinstance(state, dict) or state.get("format") != FORMAT_VERSION:
        got = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise FrugalError(f"{storage.redact(url)}: checkpoint format {got!r}, expected {FORMAT_VERSION}")
    return state


def restore(checkpoint: str | dict, trainer: Trainer | None, model: torch.nn.Module, optimizer=None,
            scheduler=None, loader=None) -> dict:
    """Put a checkpoint (URL or loaded state) back into the given objects; returns the state.

    Each rank restores its own RNG states when the world size matches the saved one (a
    different world size resumes weights and cursor, but randomness is not reproduced).
    """
    state = load_checkpoint(checkpoint) if isinstance(checkpoint, str) else checkpoint
    unwrap(model).load_state_dict(state["model"])
    if trainer is not None:
        trainer.load_state_dict(state["trainer"])
    elif optimizer is not None:
        optimizer.load_state_dict(state["optimizer"] if "optimizer" in state else state["trainer"]["optimizer"])
    if scheduler is not None and "scheduler" in state:
        scheduler.load_state_dict(state["scheduler"])
    if loader is not None and "loader" in state:
        loader.load_state_dict(state["loader"])
    rank, world = rank_world()
    if len(state["rng"]) == world:
        set_rng_state(state["rng"][rank])
    else:
        log.warning("checkpoint was written by %d ranks, this run has %d: RNG states not restored",
                    len(state["rng"]), world)
    return state


def checkpoint_url(directory: str, step: int) -> str:
    return storage.join(directory, f"step-{step:08d}.pt")


def list_checkpoints(directory: str) -> list[tuple[int, str]]:
    """(step, url) of the finished checkpoints in ``directory``, oldest first."""
    fs, path = storage.url_to_fs(directory)
    if not fs.exists(path):
        return []
    found = []
    for entry in fs.ls(path, detail=False):
        m = _NAME.search(entry.rstrip("/"))
        if m and entry.rstrip("/").endswith(m.group(0)):
            found.append((int(m.group(1)), checkpoint_url(directory, int(m.group(1)))))
    return sorted(found)


DEEPSPEED_LATEST = "latest"  # the file in which DeepSpeed names its newest tag


def latest_checkpoint(directory: str) -> str | None:
    """The newest finished checkpoint in ``directory``: a ``step-N.pt`` file, or the DeepSpeed tag
    folder that DeepSpeed's ``latest`` file names (written after the tag is complete)."""
    marker = storage.join(directory, DEEPSPEED_LATEST)
    if storage.exists(marker):
        tag = storage.read_bytes(marker).decode().strip()
        return storage.join(directory, tag)
    found = list_checkpoints(directory)
    return found[-1][1] if found else None


def is_deepspeed_checkpoint(url: str) -> bool:
    return not url.endswith(".pt")


# -- trainer glue ---------------------------------------------------------------------------
class LoaderEpochs:
    """A ``ShardLoader`` as Trainer data: ``epoch -> batches``, resuming from the loader's cursor.

    The Trainer compares ``step_in_epoch`` with ``len(data)``, but a resumed loader's ``len``
    is its *remaining* batches, and stopping at ``len`` leaves the loader's epoch unfinished;
    this adapter has no ``len`` (the epoch ends when the loader does) and exposes the loader's
    ``state_dict`` so the Trainer does not skip batches itself.
    """

    def __init__(self, loader):
        self.loader = loader

    def __call__(self, epoch: int) -> Iterator:
        self.loader.set_epoch(epoch)
        return iter(self.loader)

    def state_dict(self) -> dict:
        return self.loader.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.loader.load_state_dict(state)

    def close(self) -> None:
        """Stop the loader's workers (a later epoch starts new ones)."""
        self.loader.close()


def resume_latest(directory: str, trainer: Trainer, model: torch.nn.Module, *, loader=None, engine=None,
                  scheduler=None) -> str | None:
    """Restore the newest checkpoint in ``directory`` (a file, or a DeepSpeed tag with ``engine``);
    returns its URL, or None when there is none. Collective for DeepSpeed."""
    url = latest_checkpoint(directory)
    if url is None:
        return None
    if is_deepspeed_checkpoint(url):
        if engine is None:
            raise FrugalError(f"{storage.redact(url)} is a DeepSpeed checkpoint; this stage runs with engine ddp")
        from frugalcv.workflows.engine.engines import load_deepspeed

        load_deepspeed(engine, directory, url.rstrip("/").rsplit("/", 1)[-1], trainer=trainer, loader=loader)
        return url
    if engine is not None:
        raise FrugalError(f"{storage.redact(url)} is a plain checkpoint; this stage runs with engine deepspeed")
    restore(url, trainer, model, scheduler=scheduler, loader=loader)
    return url


class ResumeHook(HookBase):
    """Before training, restore the newest checkpoint in ``directory`` (counters, hooks, RNGs, weights,
    loader cursor), so a requeued or resumed stage continues where it stopped."""

    def __init__(self, directory: str, model: torch.nn.Module, *, loader=None, engine=None,
                 printer: Callable[[str], None] | None = print):
        self.directory, self.model, self.loader, self.engine, self.printer = directory, model, loader, engine, printer
        self.resumed_from: str | None = None

    def before_train(self) -> None:
        self.resumed_from = resume_latest(self.directory, self.trainer, self.model, loader=self.loader,
                                          engine=self.engine)
        if self.resumed_from and self.printer is not None:
            self.printer(f"resumed from {storage.redact(self.resumed_from)} "
                         f"(step {self.trainer.step}, epoch {self.trainer.epoch})")


class CheckpointHook(HookBase):
    """Saves every ``every`` steps and at the end of training; keeps the last ``keep``.

    Register it after every hook that changes state in ``after_step`` (LR schedule, logging):
    the checkpoint must see the step's state complete. Saving is collective: every rank calls
    ``save``; rank 0 writes. ``on_save(url, sha256, step)`` runs on rank 0 after each write.
    """

    def __init__(self, directory: str, model: torch.nn.Module, *, every: int | None = None,
                 keep: int | None = None, scheduler=None, loader=None, save_at_end: bool = True,
                 on_save: Callable[[str, str, int], None] | None = None, engine=None):
        if every is not None and every < 1:
            raise ConfigError(f"CheckpointHook every={every}: must be >= 1 (or None for only the end)")
        if keep is not None and keep < 1:
            raise ConfigError(f"CheckpointHook keep={keep}: must be >= 1 (or None to keep all)")
        self.directory, self.model, self.every, self.keep = directory, model, every, keep
        self.scheduler, self.loader, self.save_at_end, self.on_save = scheduler, loader, save_at_end, on_save
        #: a DeepSpeed engine: its (sharded) checkpoint folders replace the single file
        self.engine = engine
        self.last_url: str | None = None
        self.last_sha256: str | None = None
        self.last_step = -1

    def before_train(self) -> None:
        hooks = self.trainer.hooks
        later = hooks[hooks.index(self) + 1:]
        misplaced = [type(h).__name__ for h in later if not getattr(h, "runs_after_checkpoint", False)]
        if misplaced:
            raise ConfigError(f"CheckpointHook must be registered after {misplaced}: their after_step "
                              "changes would be missing from its checkpoints")

    def after_step(self) -> None:
        if self.every is not None and self.trainer.step % self.every == 0:
            self.save()

    def after_train(self) -> None:
        if self.save_at_end and not self.trainer.failed and self.last_step != self.trainer.step:
            self.save()

    def save(self) -> str:
        """Collective: write the current state; returns its URL on every rank."""
        step = self.trainer.step
        if self.engine is not None:
            from frugalcv.workflows.engine.engines import save_deepspeed

            self.last_step = step
            self.last_url = save_deepspeed(self.engine, self.directory, f"step-{step:08d}", trainer=self.trainer,
                                           loader=self.loader)
            return self.last_url
        url = checkpoint_url(self.directory, step)
        self.last_url, self.last_step = url, step  # before capture: the checkpoint knows itself
        state = capture_state(self.trainer, self.model, scheduler=self.scheduler, loader=self.loader)
        if rank_world()[0] == 0:
            self.last_sha256 = save_checkpoint(url, state)
            # one short line; the full digest is in the run's lineage
            log.info("checkpoint step %d saved (%s, sha256 %s)", step, url.rstrip("/").rsplit("/", 1)[-1],
                     self.last_sha256[:12])
            self._prune()
            if self.on_save is not None:
                self.on_save(url, self.last_sha256, step)
        if rank_world()[1] > 1:
            dist.barrier()  # the file exists for every rank once save() returns
        return url

    def _prune(self) -> None:
        if self.keep is None:
            return
        for _, url in list_checkpoints(self.directory)[: -self.keep]:
            storage.remove(url)

    def state_dict(self) -> dict:
        return {"last_url": self.last_url, "last_sha256": self.last_sha256, "last_step": self.last_step}

    def load_state_dict(self, state: dict) -> None:
        self.last_url, self.last_sha256, self.last_step = state["last_url"], state["last_sha256"], state["last_step"]
