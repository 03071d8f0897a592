"""The distillation fine-tuner: train the kept weights (and, per schedule, the masks) of a
compressed graph to match a dense teacher, keeping the compression constraint exact at every step.

    result = finetune(graph, teacher, batches, steps=500, lr=1e-4, recipe="train_sparse{pattern=2:4}")
    result.graph      # a normal compressed graph (sparse weights / qlinear), ready to save

The graph is a training graph (``train_sparse``/``train_quant`` already applied), or a compressed
or dense graph plus ``recipe`` (the training passes to apply); a one-shot sparse graph without a
recipe gets ``train_sparse`` with its own masks kept (``schedule=fixed``). Each step:

1. the student forward on ``data[step % len(data)]``, the loss against the teacher's output
   (``kl`` on logits, ``mse`` on hidden states), backward through the training ops' rules, an
   optimizer step (torch.optim on the torch backend, optax on the XLA backend);
2. masked methods: pruned weights are zeroed again (w *= mask);
3. the mask schedules that are due update their masks (:mod:`pared.passes.train.schedules`),
   in numpy, identically for both frameworks;
4. every ``check_every`` steps (and after every mask update) each mask is checked against its
   pattern: an error, not a warning, if it does not hold.

Checkpoints (:mod:`.checkpoint`) make an interrupted run resume with the same final weights.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

import numpy as np

from ..compiler.pass_manager import run_pipeline
from ..ir import Graph, Sparse, print_graph
from ..passes.context import PassContext, Report
from ..passes.train import MaskSchedule, MatrixView, holds, training_sites
from ..passes.train.export import TrainExport
from .checkpoint import fingerprint, load_checkpoint, save_checkpoint
from .losses import LOSSES

BACKENDS = ("torch", "xla")


class FinetuneError(ValueError):
    """The fine-tuning cannot run as asked (no compressed weights, a bad option); the message says why."""


class ConstraintError(AssertionError):
    """A mask stopped obeying its pattern during training (a bug, never expected)."""


@dataclass
class FinetuneResult:
    """What :func:`finetune` returns.

    Attributes:
        graph: the exported compressed graph (sparse-encoded weights, ``qlinear`` layers).
        training_graph: the training graph with the trained weights and masks.
        history: one dict per step: ``step``, ``seconds`` (training time so far, held-out
            evaluations excluded; ``eval_seconds`` is theirs), ``loss``, ``eval`` (when measured).
        report: the training passes' and the export's per-layer rows.
        resumed_from: the step a checkpoint resumed at (None: a fresh run).
    """

    graph: Graph
    training_graph: Graph
    history: list = field(default_factory=list)
    report: Report = field(default_factory=Report)
    resumed_from: Optional[int] = None


def default_recipe(graph: Graph) -> Optional[str]:
    """``train_sparse`` over the params a one-shot pass left sparse, or None when there are none."""
    import re

    from ..passes.calibration import find_weight_sites

    consumed = {s.param for s in find_weight_sites(graph)}
    sparse = [p for p in graph.params if isinstance(p.type.encoding, Sparse) and p.name in consumed]
    if any(e.op == "qlinear" for e in graph.eqns):
        raise FinetuneError(
            "finetune: this graph holds quantized layers (qlinear); QAT starts from the dense model: "
            "pass the dense graph with recipe='train_quant{weights=int4,group=128}'"
        )
    if not sparse:
        return None
    nm = [p.type.encoding for p in sparse if p.type.encoding.format == "nm"]
    pattern = f"{nm[0].n}:{nm[0].m}" if nm else "unstructured"
    targets = ",".join("^" + re.escape(p.name) + "$" for p in sparse)
    return f"train_sparse{{pattern={pattern},targets=({targets})}}"


def lr_at(step: int, steps: int, lr: float, schedule: str, warmup: int) -> float:
    """Linear warmup over ``warmup`` steps, then constant or cosine decay to zero."""
    if warmup and step < warmup:
        return lr * (step + 1) / warmup
    if schedule == "cosine":
        frac = (step - warmup) / max(steps - warmup, 1)
        return lr * 0.5 * (1 + math.cos(math.pi * frac))
    return lr


def make_engine(backend: str, graph: Graph, trained, masks, **kw):
    if backend == "torch":
        from .torch_engine import TorchEngine

        return TorchEngine(graph, trained, masks, **kw)
    if backend == "xla":
        from .jax_engine import JaxEngine

        return JaxEngine(graph, trained, masks, **kw)
    raise FinetuneError(f"finetune: backend {backend!r} is not one of {BACKENDS}")


def _teacher_fn(teacher: Any, backend: str) -> Callable:
    """``teacher`` as ``run(inputs) -> first output``: a Graph (lowered on ``backend``) or a callable."""
    if isinstance(teacher, Graph):
        if backend == "torch":
            from ..backends.torch import lower
            from .torch_engine import torch_teacher

            return torch_teacher(lower(teacher))
        import jax

        from ..backends.xla import graph_params, lower

        f, w = jax.jit(lower(teacher).__call__), graph_params(teacher)
        return lambda inputs: f(w, *[np.asarray(x) for x in inputs])[0]
    if not callable(teacher):
        raise TypeError(f"finetune: teacher must be a Graph or a callable, got {type(teacher).__name__}")
    if backend == "torch":
        from .torch_engine import torch_teacher

        return torch_teacher(teacher)
    from .jax_engine import jax_teacher

    return jax_teacher(teacher)


class _Bar:
    """tqdm when installed (with the loss and the held-out figure), else a line every 10%."""

    def __init__(self, total: int, initial: int, enabled: bool):
        self.enabled, self.total, self.bar, self.last = enabled, total, None, -1
        if enabled:
            try:
                from tqdm.auto import tqdm

                self.bar = tqdm(total=total, initial=initial, desc="finetune", unit="step", file=sys.stderr)
            except ImportError:
                pass

    def update(self, step: int, loss: float, ev: Optional[float]) -> None:
        if not self.enabled:
            return
        note = {"loss": f"{loss:.4g}"} | ({"eval": f"{ev:.4f}"} if ev is not None else {})
        if self.bar is not None:
            self.bar.set_postfix(note, refresh=False)
            self.bar.update(1)
        elif (10 * (step + 1)) // self.total != self.last:
            self.last = (10 * (step + 1)) // self.total
            print(f"finetune: step {step + 1}/{self.total} " + " ".join(f"{k} {v}" for k, v in note.items()),
                  file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def finetune(
    compressed: Graph,
    teacher: Any,
    data: Sequence[Sequence[Any]],
    *,
    steps: int,
    lr: float = 1e-4,
    recipe: Any = None,
    backend: str = "torch",
    loss: str = "auto",
    temperature: float = 1.0,
    optimizer: str = "adamw",
    weight_decay: float = 0.0,
    lr_schedule: str = "constant",
    warmup: int = 0,
    eval_fn: Optional[Callable[[Callable], float]] = None,
    eval_data: Optional[Sequence[Sequence[Any]]] = None,
    eval_every: int = 0,
    checkpoint: Optional[str] = None,
    checkpoint_every: int = 0,
    check_every: int = 100,
    progress: bool = True,
    on_step: Optional[Callable[[int, dict, Any], None]] = None,
    device: Any = None,
) -> FinetuneResult:
    """Distillation fine-tuning of a compressed graph (see the module docstring).

    Args:
        compressed: the student IR graph (with weights): a training graph, a one-shot compressed
            graph, or a dense graph with ``recipe``.
        teacher: the dense model: an IR Graph (run on ``backend``) or a callable
            ``teacher(*inputs)`` (a torch module for the torch backend, a jax function for xla).
        data: batches, each a sequence of the graph's inputs; step ``t`` trains on ``data[t % len(data)]``.
        steps: optimizer steps.
        lr: peak learning rate; ``lr_schedule`` ``constant`` or ``cosine``, after ``warmup`` steps.
        recipe: training passes to apply first (``train_sparse{...}``, ``train_quant{...}``).
        backend: ``torch`` (torch.optim) or ``xla`` (optax).
        loss: ``kl`` (logits), ``mse`` (hidden states) or ``auto`` (kl when the output's last dim
            is over 1000 wide, mse otherwise); ``temperature`` for kl.
        optimizer / weight_decay: ``adamw`` or ``sgd``.
        eval_fn: ``eval_fn(run) -> float``, ``run(inputs) -> outputs`` the student; the held-out
            figure shown and logged. Default: the distillation loss on ``eval_data``.
        eval_every: steps between held-out measurements (0: only at the end).
        checkpoint / checkpoint_every: a directory to save to every ``checkpoint_every`` steps (and
            at the end) and to resume from when it already holds this run's checkpoint.
        check_every: steps between constraint checks (also after every mask update; 0: those only).
        on_step: ``on_step(step, record, engine)`` after each step; ``engine.get(name)`` is a param's
            current value (numpy). An exception it raises stops the run (the checkpoint stays).
    """
    if steps < 1:
        raise FinetuneError(f"finetune: steps must be >= 1, got {steps}")
    if not data:
        raise FinetuneError("finetune: no training batches")
    from ..passes import train as _register  # noqa: F401  (registers the training passes)

    report = Report()
    graph = compressed
    if not training_sites(graph):
        recipe = recipe if recipe is not None else default_recipe(graph)
        if recipe is None:
            raise FinetuneError("finetune: the graph has no sparse or quantized weights; pass recipe="
                                "'train_sparse{...}' or 'train_quant{...}' (docs/training.md)")
    if recipe is not None:
        graph = run_pipeline(graph, recipe, PassContext(report=report))
    sites = training_sites(graph)
    trained = list(dict.fromkeys(s.param for s in sites))
    masked = [s for s in sites if s.eqn.op == "ste_mask"]
    weight_of = {s.mask: s.param for s in masked}
    schedules = {s.mask: MaskSchedule.from_attrs(s.eqn.attrs, steps) for s in masked}
    views = {s.mask: MatrixView(tuple(s.eqn.attrs["perm"]), s.eqn.attrs["outs"]) for s in masked}
    zeroed = [(s.param, s.mask) for s in masked if s.eqn.attrs["backward"] == "masked"]
    # a fixed mask needs no re-zeroing: the masked gradient is exactly zero there, and so are the
    # optimizer's moments and update; a mask that moved leaves moments behind on dropped weights
    moving = [(w, m) for w, m in zeroed if schedules[m].schedule != "fixed"]
    rigl = [s.mask for s in masked if schedules[s.mask].schedule == "rigl"]
    layer_density = {s.mask: float(np.mean(np.asarray(graph.weight(s.mask)) != 0)) for s in masked}
    if loss == "auto":
        last = graph.outputs[0].type.shape[-1] if graph.outputs[0].type.shape else 1
        loss = "kl" if isinstance(last, int) and last > 1000 else "mse"
    if loss not in LOSSES:
        raise FinetuneError(f"finetune: loss {loss!r} is not one of {LOSSES} (or auto)")
    engine = make_engine(backend, graph, trained, [s.mask for s in masked], loss=loss, temperature=temperature,
                         optimizer=optimizer, lr=lr, weight_decay=weight_decay, mask_grads=rigl, device=device)
    teacher_fn = _teacher_fn(teacher, backend)

    def teach(batch):
        return teacher_fn(engine.as_inputs(batch))

    run = engine.forward
    if eval_fn is None and eval_data:
        held = [(b, teach(b)) for b in eval_data]

        def eval_fn(_run):
            return float(np.mean([engine.loss(b, t) for b, t in held]))

    options = dict(steps=steps, lr=lr, backend=backend, loss=loss, temperature=temperature, optimizer=optimizer,
                   weight_decay=weight_decay, lr_schedule=lr_schedule, warmup=warmup, batches=len(data))
    fp = fingerprint(print_graph(graph), options)
    history: list[dict] = []
    start, resumed = 0, None
    if checkpoint:
        found = load_checkpoint(checkpoint, fp)
        if found is not None:
            state, meta = found
            engine.load_state(state)
            start = resumed = int(meta["step"])
            history = list(meta.get("history", []))
            layer_density.update(meta.get("density", {}))

    def check(step: int) -> None:
        for m, sched in schedules.items():
            mask2 = views[m].to2d(engine.get(m))
            why = holds(mask2, sched.pattern, layer_density[m])
            if why:
                raise ConstraintError(
                    f"finetune: after step {step}, the mask of {weight_of[m]!r} breaks {sched.pattern}: {why}")
        for w, m in zeroed:
            if np.any(engine.get(w)[engine.get(m) == 0] != 0):
                raise ConstraintError(f"finetune: after step {step}, pruned weights of {w!r} are not zero")

    bar = _Bar(steps, start, progress)
    spent = history[-1]["seconds"] if history else 0.0  # training seconds, held-out evaluations excluded
    spent_eval = history[-1].get("eval_seconds", 0.0) if history else 0.0
    try:
        for step in range(start, steps):
            t_step = time.perf_counter()
            batch = data[step % len(data)]
            loss_v = engine.step(batch, teach(batch), lr_at(step, steps, lr, lr_schedule, warmup))
            if not math.isfinite(loss_v):
                raise FloatingPointError(f"finetune: loss is {loss_v} at step {step}; lower lr (now {lr:g})")
            if moving:
                engine.apply_masks(moving)
            updated = _update_masks(engine, schedules, views, weight_of, step)
            for m in updated:  # gradual: the schedule's density; the others keep their kept count
                if schedules[m].schedule == "gradual":
                    layer_density[m] = schedules[m].density(step)
            if zeroed and updated:
                engine.apply_masks(zeroed)
            if updated or (check_every and (step + 1) % check_every == 0) or step == steps - 1:
                check(step)
            spent += time.perf_counter() - t_step
            rec = {"step": step + 1, "seconds": spent, "loss": loss_v}
            if eval_fn is not None and ((eval_every and (step + 1) % eval_every == 0) or step == steps - 1):
                t_eval = time.perf_counter()
                rec["eval"] = float(eval_fn(run))
                spent_eval += time.perf_counter() - t_eval
            rec["eval_seconds"] = spent_eval
            history.append(rec)
            bar.update(step, loss_v, rec.get("eval"))
            if checkpoint and ((checkpoint_every and (step + 1) % checkpoint_every == 0) or step == steps - 1):
                save_checkpoint(checkpoint, engine.state(),
                                {"step": step + 1, "fingerprint": fp, "history": history, "density": layer_density})
            if on_step is not None:
                on_step(step, rec, engine)
    finally:
        bar.close()
    values = {n: engine.get(n) for n in trained + [s.mask for s in masked]}
    trained_graph = graph.with_weights(values)
    ctx = PassContext(report=report)
    exported = TrainExport().run(trained_graph, ctx)
    return FinetuneResult(exported, trained_graph, history, report, resumed)


def _update_masks(engine, schedules, views, weight_of, step: int) -> list[str]:
    """Apply every due mask update after ``step``; returns the masks that changed."""
    changed = []
    grads = engine.mask_grads()
    for m, sched in schedules.items():
        if not sched.due(step):
            continue
        w_name = weight_of[m]
        view = views[m]
        w, mask = engine.get(w_name), engine.get(m)
        g = grads.get(m)
        new2, grown2 = sched.update(view.to2d(w), view.to2d(mask), None if g is None else view.to2d(g), step)
        new = view.from2d(new2, mask.shape)
        if np.array_equal(new, mask):
            continue
        upd = {m: new}
        if grown2 is not None and grown2.any():  # RigL: a grown connection starts at zero
            upd[w_name] = np.where(view.from2d(grown2, mask.shape), 0, w).astype(w.dtype)
        engine.set(upd)
        changed.append(m)
    return changed
