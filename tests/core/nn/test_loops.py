"""The loops: top-k counting, the lr schedule, the update rule, divergence."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from torch import nn

from alexcli.core.data.batches import Batch
from alexcli.core.data.transforms import Normalizer
from alexcli.core.nn.loops import EpochProgress, NetworkInput, Tally, train_steps, validate
from alexcli.core.nn.optim import LrSchedule, make_optimizer
from alexcli.errors import TrainingDiverged


def test_topk_counts_match_numpy():
    rng = np.random.default_rng(0)
    out = rng.normal(size=(200, 12)).astype(np.float32)
    target = rng.integers(0, 12, 200)
    rank = (out > out[np.arange(200), target][:, None]).sum(1)  # outputs above the target's
    tally = Tally(12)
    tally.add(torch.from_numpy(out[:150]), torch.from_numpy(target[:150]), 3.0)
    tally.add(torch.from_numpy(out[150:]), torch.from_numpy(target[150:]), 1.0)
    assert (tally.images, tally.top1, tally.top5) == (200, (rank < 1).sum(), (rank < 5).sum())
    assert tally.loss == pytest.approx(4.0 / 200)
    np.testing.assert_array_equal(tally.class_images, np.bincount(target, minlength=12))
    np.testing.assert_array_equal(tally.class_top1, np.bincount(target[rank < 1], minlength=12))


def test_top5_with_fewer_than_five_classes_counts_everything():
    tally = Tally(3)
    tally.add(torch.randn(10, 3), torch.randint(0, 3, (10,)))
    assert tally.top5 == 10 and math.isnan(Tally(3).top1_error)


def test_plateau_divides_by_ten_after_patience_at_most_max_drops():
    s = LrSchedule(0.01, "plateau", max_drops=2, patience=2)
    drops = [s.end_epoch(e) for e in [0.9, 0.8, 0.8, 0.81, 0.7, 0.7, 0.7, 0.7, 0.7, 0.7]]
    assert drops == [False, False, False, True, False, False, True, False, False, False]
    assert s.lr(9, 0, 10) == pytest.approx(0.0001)


def test_step_schedule_drops_at_the_milestones():
    s = LrSchedule(0.1, "step", milestones=(2, 4), epochs=6)
    assert [s.lr(e, 0, 5) for e in range(6)] == pytest.approx([0.1, 0.1, 0.01, 0.01, 1e-3, 1e-3])
    assert not s.end_epoch(0.5)


@pytest.mark.parametrize(("epochs", "low"), [(30, [2010, 2610]), (6, [402, 522]), (4, [268, 348])])
def test_step_milestones_below_one_are_fractions_of_the_runs_steps(epochs, low):
    """The `small` preset's (0.67, 0.87), here at 100 steps an epoch: a run of any length
    trains 0.67 of its steps at the full lr (as epochs, 4 could only drop at 3 and 4)."""
    s = LrSchedule(0.01, "step", milestones=(0.67, 0.87), epochs=epochs)
    assert s.milestone_steps(100) == low
    lrs = [s.lr(e, i, 100) for e in range(epochs) for i in range(100)]
    assert lrs[low[0] - 1] == 0.01 and lrs[low[0]] == pytest.approx(0.001)
    assert lrs[low[1] - 1] == pytest.approx(0.001) and lrs[low[1]] == pytest.approx(1e-4)
    assert lrs[-1] == pytest.approx(1e-4)
    assert [s.drops_at(e, i, 100) for e, i in ((0, 0), divmod(low[0], 100), (epochs - 1, 99))] == [
        0,
        1,
        2,
    ]


@pytest.mark.parametrize("epochs", [1, 2, 3, 4, 5, 6, 30])
@pytest.mark.parametrize("steps", [1, 2, 3, 10, 250])
def test_fractional_milestones_never_coincide_and_leave_a_tenth_after_the_last(epochs, steps):
    """One drop a step at most, each ÷10, ≥ 10 % of the run (a step at least) after the
    last, none in the first epoch; as many as fit (both, from 2 epochs of 10 steps)."""
    s = LrSchedule(0.005, "step", milestones=(0.67, 0.87), epochs=epochs)
    placed = s.milestone_steps(steps)
    total = epochs * steps
    assert placed == sorted(set(placed)) and all(m >= steps for m in placed)
    if placed:
        assert total - placed[-1] >= max(1, math.ceil(0.1 * total))
    assert len(placed) == 2 or total < 20 or epochs == 1
    assert epochs > 1 or not placed
    lrs = [s.lr(e, i, steps) for e in range(epochs) for i in range(steps)]
    ratios = [a / b for a, b in itertools.pairwise(lrs)]
    assert ratios == pytest.approx([10.0 if t + 1 in placed else 1.0 for t in range(total - 1)])
    assert lrs[0] == 0.005 and lrs[-1] == pytest.approx(0.005 / 10 ** len(placed))


def test_epoch_milestones_are_kept_as_given():
    s = LrSchedule(0.1, "step", milestones=(3, 4, 0.5), epochs=5)
    assert s.milestone_steps(10) == [25, 30, 40]


@pytest.mark.parametrize(
    ("epochs", "said"),
    [
        (
            4,
            {
                2: ["lr ÷10 → 0.002 from step 171 of epoch 3"],
                3: ["lr ÷10 → 0.0002 from step 121 of epoch 4"],
            },
        ),
        (
            2,
            {
                1: [
                    "lr ÷10 → 0.002 from step 86 of epoch 2",
                    "lr ÷10 → 0.0002 from step 186 of epoch 2",
                ]
            },
        ),
        (1, {}),
    ],
)
def test_each_drop_is_said_once_by_the_line_before_it(epochs, said):
    """An epoch's line names the next epoch's drops, where they fall and the lr after each
    (two in one epoch, both). 250 steps an epoch, `small`'s 0.02 and (0.67, 0.87): 4
    epochs drop at steps 670 and 870, 2 at 335 and 435, 1 never."""
    s = LrSchedule(0.02, "step", milestones=(0.67, 0.87), epochs=epochs)
    lines = {e + 1: s.drops_ahead(e, 250, 0) for e in range(epochs)}
    assert {e: d for e, d in lines.items() if d} == said
    twice = LrSchedule(0.1, "step", milestones=(2, 2), epochs=3)
    assert [twice.drops_ahead(e, 10, 0) for e in range(3)] == [
        [],
        ["lr ÷100 → 0.001 from epoch 3"],
        [],
    ]


def test_plateau_says_the_drop_it_just_made_unless_no_epoch_is_left():
    s = LrSchedule(0.01, "plateau", max_drops=1, patience=0, epochs=2)
    assert s.end_epoch(0.5, 0)
    assert s.drops_ahead(0, 10, 0) == ["lr ÷10 → 0.001 from epoch 2"]
    assert not s.end_epoch(0.4, 1) and s.drops_ahead(1, 10, 1) == []
    last = LrSchedule(0.01, "plateau", max_drops=1, patience=0, epochs=1)
    assert last.end_epoch(0.5, 0) and last.drops_ahead(0, 10, 0) == []  # the run ends


def test_plateau_gives_a_short_run_the_drops_it_is_due():
    """Patience 5 never runs out in 6 improving epochs; the last three drop all the same,
    one an epoch, so the run ends at base ÷ 1000. A long run is left to its patience."""
    s = LrSchedule(0.01, "plateau", max_drops=3, patience=5, epochs=6)
    drops = [s.end_epoch(0.9 - 0.1 * e, e) for e in range(6)]
    assert drops == [False, False, True, True, True, False]
    assert s.lr(5, 0, 10) == pytest.approx(1e-5)
    long = LrSchedule(0.01, "plateau", max_drops=3, patience=5, epochs=90)
    assert not any(long.end_epoch(0.9 - 0.001 * e, e) for e in range(86))
    assert [long.end_epoch(0.5, e) for e in (86, 87, 88, 89)] == [True, True, True, False]


def test_warmup_ramps_linearly_over_its_steps():
    s = LrSchedule(0.04, "step", warmup_epochs=0.5)  # 2 of 4 steps
    assert [s.lr(0, k, 4) for k in range(4)] == pytest.approx([0.02, 0.04, 0.04, 0.04])
    assert [s.warming_up(0, k, 4) for k in range(4)] == [True, False, False, False]


def test_schedule_state_round_trips():
    a = LrSchedule(0.01, patience=1)
    for e in (0.5, 0.6, 0.6):
        a.end_epoch(e)
    b = LrSchedule(0.01, patience=1)
    b.load_state_dict(a.state_dict())
    assert b.lr(5, 0, 1) == a.lr(5, 0, 1) and b.state_dict() == a.state_dict()


def _paper_sgd(w, grads, lrs, mu=0.9, wd=5e-4):
    """The paper's rule, by hand: v ← μv − λεw − ε∇, w ← w + v."""
    v = np.zeros_like(w)
    for g, lr in zip(grads, lrs, strict=True):
        v = mu * v - wd * lr * w - lr * g(w)
        w = w + v
    return w


def _torch_sgd(w, grads, lrs):
    p = nn.Parameter(torch.tensor(w, dtype=torch.float64))
    opt = make_optimizer(nn.ParameterList([p]), lrs[0], 0.9, 5e-4)
    for g, lr in zip(grads, lrs, strict=True):
        for group in opt.param_groups:
            group["lr"] = lr
        p.grad = torch.tensor(g(p.detach().numpy()))
        opt.step()
    return p.detach().numpy()


def test_pytorch_momentum_is_the_papers_rule_at_a_constant_lr_and_differs_after_a_drop():
    rng = np.random.default_rng(0)
    a = rng.normal(size=5)
    grads = [lambda w, k=k: a * w + np.sin(k + w) for k in range(30)]
    w0 = rng.normal(size=5)
    constant = [0.05] * 30
    np.testing.assert_allclose(
        _torch_sgd(w0, grads, constant), _paper_sgd(w0, grads, constant), rtol=1e-12
    )
    dropped = [0.05] * 15 + [0.005] * 15  # the paper's velocity keeps the old lr for a while
    diff = np.abs(_torch_sgd(w0, grads, dropped) - _paper_sgd(w0, grads, dropped)).max()
    assert diff > 1e-4


class _Flat(nn.Module):
    def __init__(self, classes=3, crop=4):
        super().__init__()
        self.fc = nn.Linear(3 * crop * crop, classes)

    def forward(self, x):
        return self.fc(x.flatten(1))


def _batches(n_batches=3, n=8, crop=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    zeros = torch.zeros(n, dtype=torch.int64)
    return [
        Batch(
            torch.randint(0, 256, (n, crop, crop, 3), generator=g, dtype=torch.uint8),
            torch.randint(0, 3, (n,), generator=g),
            zeros,
            zeros,
            torch.zeros(n, dtype=torch.bool),
            torch.zeros(n, 3),
        )
        for _ in range(n_batches)
    ]


def _normalizer():
    return Normalizer.create(
        np.full((4, 4, 3), 128.0), np.ones(3), np.eye(3), torch.device("cpu"), input_scale=1 / 64
    )


def _steps(model, batches, totals, *, lr=0.01, epoch=0, optimizer=None, **kw):
    """`train_steps` over `batches` as the trainer runs them: the lr of the "step"
    schedule, an epoch of `len(batches)` steps."""
    optimizer = optimizer or make_optimizer(model, lr, 0.9, 5e-4)
    schedule, n = LrSchedule(lr, "step"), len(batches)

    def lr_of(step):
        return schedule.lr(epoch, step, n)

    inputs = NetworkInput(_normalizer())
    return train_steps(model, optimizer, inputs, batches, totals, epoch=epoch, lr=lr_of, **kw)


def _train(model, batches, **kw):
    """Every step of `_steps`; the epoch's totals."""
    totals = EpochProgress()
    for _ in _steps(model, batches, totals, **kw):
        pass
    return totals


def test_validate_counts_every_image_once_as_numpy_does():
    torch.manual_seed(0)
    model = _Flat()
    batches = _batches()
    counts = validate(model, batches, _normalizer(), torch.device("cpu"), num_classes=3)
    x = torch.cat([(b.images.float() - 128) / 64 for b in batches]).permute(0, 3, 1, 2)
    y = torch.cat([b.labels for b in batches])
    logits = model(x).detach().numpy()
    assert counts.images == 24
    assert counts.top1 == int((logits.argmax(1) == y.numpy()).sum())
    assert counts.loss == pytest.approx(
        float(nn.functional.cross_entropy(model(x), y).detach()), rel=1e-5
    )


def test_an_epoch_lowers_the_loss_and_records_progress():
    torch.manual_seed(0)
    model = _Flat()
    batches = _batches(n_batches=1) * 20
    state = _train(model, batches, lr=0.05)
    assert state.step == 20 and state.images == 160 and state.seconds > 0
    cpu = torch.device("cpu")
    assert validate(model, batches[:1], _normalizer(), cpu, num_classes=3).loss < 0.5 * math.log(3)


@pytest.mark.parametrize(
    ("limit", "max_step"), [(0.05, None), (1e6, None), (None, None), (None, 0.004), (1e6, 0.004)]
)
def test_clipping_scales_the_step_to_the_gradient_norm_limit(limit, max_step):
    """One step with `clip_grad_norm` and `max_step_norm`: the weights move by
    −lr · g · min(1, c/‖g‖), c the smaller of the limit and max_step ÷ lr, ‖g‖ the L2 norm
    over every parameter's gradient, computed here by hand (momentum starts at 0 and
    weight decay is off, so the first step is plain SGD on g); None for both (the
    default) leaves g as it is."""
    torch.manual_seed(0)
    model = _Flat()
    batch = _batches(n_batches=1)[0]
    x = (batch.images.float() - 128).permute(0, 3, 1, 2) / 64
    grads = torch.autograd.grad(
        nn.functional.cross_entropy(model(x), batch.labels), list(model.parameters())
    )
    norm = math.sqrt(sum(float((g.double() ** 2).sum()) for g in grads))
    bound = min(limit or math.inf, math.inf if max_step is None else max_step / 0.1)
    scale = min(1.0, bound / norm)
    expected = [
        p.detach() - 0.1 * g * scale for p, g in zip(model.parameters(), grads, strict=True)
    ]
    before = [p.detach().clone() for p in model.parameters()]
    optimizer = make_optimizer(model, 0.1, 0.9, 0.0)
    _train(
        model, [batch], lr=0.1, optimizer=optimizer, clip_grad_norm=limit, max_step_norm=max_step
    )
    for p, e in zip(model.parameters(), expected, strict=True):
        torch.testing.assert_close(p.detach(), e, rtol=1e-5, atol=1e-7)
    step = math.sqrt(
        sum(
            float(((p.detach() - b).double() ** 2).sum())
            for p, b in zip(model.parameters(), before, strict=True)
        )
    )
    assert step == pytest.approx(0.1 * min(norm, bound), rel=1e-4)
    assert (norm > bound) == (bound < 1)  # the small bounds bind, the large ones do not
    if max_step is not None:
        assert step == pytest.approx(max_step, rel=1e-4)  # the step at its bound


def test_bf16_autocast_runs_on_the_cpu():
    torch.manual_seed(0)
    model = _Flat()
    state = _train(model, _batches(), amp="bf16")
    assert math.isfinite(state.loss)


def test_a_non_finite_loss_stops_training_naming_epoch_and_step():
    torch.manual_seed(0)
    model = _Flat()
    state = EpochProgress()
    with pytest.raises(TrainingDiverged, match=r"at epoch 3, step (\d)") as e:
        for _ in _steps(model, _batches(n_batches=4), state, lr=1e30, epoch=2):
            pass
    assert "\n" not in str(e.value) and "--lr" in (e.value.hint or "")
    assert f"step {state.step + 1}" in str(e.value)  # the step that failed, none after it


def _recorded_epoch(read_late, lr=0.05, n_batches=6):
    """Weights, final totals and what the loop saw after each step, with the loss read
    at once or late."""
    torch.manual_seed(0)
    model = _Flat()
    seen = []
    state = EpochProgress()
    try:
        for _ in _steps(model, _batches(n_batches), state, lr=lr, read_late=read_late):
            weights = model.fc.weight.detach().clone()  # what a checkpoint here would hold
            seen.append((state.step, state.loss_sum, state.hits, state.images, weights))
    except TrainingDiverged as e:
        return state, seen, e
    return state, seen, None


def test_a_loss_read_a_step_late_counts_and_saves_as_one_read_at_once():
    """CUDA reads each step's loss one step late (no host sync per step): the epoch's
    totals, and what the loop sees after every step (what a checkpoint would hold) — its
    step count, sums and the weights — are those of reading at once."""
    now, seen_now, _ = _recorded_epoch(read_late=False)
    late, seen_late, _ = _recorded_epoch(read_late=True)
    assert late.state_dict() | {"seconds": 0} == now.state_dict() | {"seconds": 0}
    assert len(seen_late) == len(seen_now) == 6
    for a, b in zip(seen_now, seen_late, strict=True):
        assert a[:4] == b[:4]
        torch.testing.assert_close(a[4], b[4], rtol=0, atol=0)


def test_a_non_finite_loss_read_late_stops_one_update_later_and_saves_nothing_of_it():
    now, seen_now, e_now = _recorded_epoch(read_late=False, lr=1e30)
    late, seen_late, e_late = _recorded_epoch(read_late=True, lr=1e30)
    assert e_now is not None and e_late is not None
    assert str(e_late) == str(e_now)  # the same step is named
    assert [s[:4] for s in seen_late] == [s[:4] for s in seen_now]  # no step after it seen
    assert late.step == now.step


def test_weights_an_epochs_last_step_broke_stop_the_run_at_validation():
    """The step's own check sees the loss before its update: an epoch whose last update
    made the weights NaN was validated, saved as last.pt (and best.pt) and went on."""
    torch.manual_seed(0)
    model = _Flat()
    with torch.no_grad():
        next(model.parameters()).fill_(math.nan)
    with pytest.raises(TrainingDiverged, match="the validation loss became nan") as e:
        validate(model, _batches(), _normalizer(), torch.device("cpu"), num_classes=3)
    assert "last good state" in (e.value.hint or "")


@pytest.mark.parametrize("devices", [1, 2])
def test_the_optimizer_a_gradscaler_drives_skips_steps_as_plain_sgd(monkeypatch, devices):
    """fp16 on CUDA: GradScaler's first scale (2^16) routinely overflows the first step.
    Fused SGD, left to skip it in its kernel, (1) left the momentum buffers it made with
    `empty_like` unfilled, so the next step added whatever that memory held (reused CUDA
    memory may hold anything; NaN here), and (2) with the towers on two devices was
    handed the sum of their overflow flags, 2, and skips only on 1: it stepped with
    infinite gradients. The optimizer made for a scaler is never fused; every step must
    match plain (foreach) SGD's."""
    monkeypatch.setattr(torch, "empty_like", lambda t, *a, **k: torch.full_like(t, math.nan))
    if devices == 2:  # a second device's overflow flag, as towers on two GPUs give
        unscale = torch.amp.GradScaler._unscale_grads_

        def two_devices(self, *args):
            found = unscale(self, *args)
            return {**found, torch.device("cpu", 0): found[torch.device("cpu")].clone()}

        monkeypatch.setattr(torch.amp.GradScaler, "_unscale_grads_", two_devices)
    steps = []

    def overflow_first(grad):  # the first step's scaled gradients overflow
        steps.append(1)
        return grad * math.inf if len(steps) == 1 else grad

    weights = []
    for ours in (True, False):
        torch.manual_seed(0)
        model = _Flat()
        optimizer = (
            make_optimizer(model, 0.01, 0.9, 5e-4, scaled=True)
            if ours
            else torch.optim.SGD(model.parameters(), 0.01, momentum=0.9, weight_decay=5e-4)
        )
        assert not optimizer.defaults["fused"]
        scaler = torch.amp.GradScaler("cpu")  # 2^16, halved at each skipped step
        steps.clear()
        model.fc.weight.register_hook(overflow_first)
        _train(model, _batches(n_batches=3), optimizer=optimizer, scaler=scaler)
        assert scaler.get_scale() == 2.0**15  # the first step was skipped, the rest not
        weights.append(model.fc.weight.detach().clone())
    assert weights[0].isfinite().all()
    torch.testing.assert_close(weights[0], weights[1])


_RANK = """
import datetime, math, sys, torch, torch.distributed as dist
from tests.core.nn.test_loops import _Flat, _batches, _normalizer
from alexcli.core.nn.loops import validate
rank = int(sys.argv[1])
dist.init_process_group("gloo", init_method=sys.argv[2], rank=rank, world_size=2,
                        timeout=datetime.timedelta(seconds=30))
torch.manual_seed(0)
model = _Flat()
if rank == 1:  # only this rank's images overflow (fp16 logits, say)
    with torch.no_grad():
        next(model.parameters())[0].fill_(math.inf)
try:
    validate(model, _batches(), _normalizer(), torch.device("cpu"), num_classes=3)
    print("validated")
except Exception as e:
    print(type(e).__name__, e)
"""


@pytest.mark.slow
def test_a_non_finite_validation_loss_on_one_rank_stops_every_rank_alike(tmp_path):
    """Checked before the ranks' sum, the rank that saw it raised while the others waited
    in all_reduce (gloo: "Connection closed"; NCCL: a hang until the timeout)."""
    import socket
    import subprocess
    import sys
    from pathlib import Path

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        address = f"tcp://127.0.0.1:{s.getsockname()[1]}"
    root = Path(__file__).resolve().parents[3]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _RANK, str(r), address],
            cwd=root,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for r in (0, 1)
    ]
    outs = [p.communicate(timeout=120) for p in procs]
    for out, err in outs:
        assert out.startswith("TrainingDiverged the validation loss became"), (out, err[-800:])
