"""Progressive unfreezing: TrainConfig.unfreeze={epoch: module-name part}.

A frozen part has requires_grad False, is absent from the optimizer and keeps its BatchNorm in eval
mode until the start of its (1-based) epoch; from then on it trains with its group's LR. Resume is
bit-identical across the unfreeze boundary, and a part that names no parameter is a ValueError.
"""

import shutil
from collections import OrderedDict

import pytest
import torch
from torch import nn
from torch.optim.optimizer import register_optimizer_step_pre_hook
from torch.utils.data import TensorDataset

import nbtools as nbt
from nbtools.runs import load_checkpoint
from nbtools.train.optim import group_of
from tests.helpers import StopAfter, assert_same, without_times

GROUP_LRS = {"backbone": 1e-2, "attention": 2e-2, "classifier": 5e-2}
CFG = nbt.TrainConfig(
    epochs=4,
    batch_size=8,
    lr=1e-2,
    group_lrs=GROUP_LRS,
    unfreeze={2: "layer2", 3: "layer1"},
    warmup_epochs=1,
    precision="fp32",
    ema_decay=0.9,
    log_every=2,
    checkpoint_every_steps=2,  # mid-epoch checkpoints too; they only add files
    checkpoint_every_minutes=None,
    keep_last=20,
    seed=5,
)
STEPS_PER_EPOCH = 4  # 32 samples / batch_size 8, grad_accum 1


class TinyNet(nn.Module):
    """backbone.layer1, backbone.layer2 (conv + BatchNorm each), attention, classifier (with dropout,
    so a resume that loses the RNG state shows up)."""

    def __init__(self):
        super().__init__()

        def block(c_in: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(c_in, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU())

        self.backbone = nn.Sequential(OrderedDict(layer1=block(1), layer2=block(4)))
        self.attention = nn.Sequential(nn.Conv2d(4, 4, 1), nn.Sigmoid())
        self.classifier = nn.Sequential(nn.Dropout(0.3), nn.Linear(4, 2))

    def forward(self, x):
        f = self.backbone(x)
        f = f * self.attention(f)
        return self.classifier(f.mean(dim=(2, 3)))


def tiny_net() -> TinyNet:
    torch.manual_seed(1)
    return TinyNet()


def _data(seed: int) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    y = (torch.rand(32, generator=g) < 0.5).long()
    x = torch.randn(32, 1, 6, 6, generator=g) + y.view(-1, 1, 1, 1).float()
    return TensorDataset(x, y)


def _fit(run_dir, cfg=CFG, model=None, **kw):
    return nbt.fit(
        model or tiny_net(), _data(0), _data(1), nn.CrossEntropyLoss(), cfg, run_dir, verbose=False, **kw
    )


def _part(name: str) -> str:
    for part in ("layer1", "layer2", "attention", "classifier"):
        if part in name:
            return part
    raise AssertionError(name)


class Probe:
    """Looks at the live model and optimizer right before every optimizer step."""

    def __init__(self, model: nn.Module):
        self.model = model
        self.steps: list[dict] = []

    def __call__(self, optimizer, args, kwargs):
        in_opt = {id(p): g for g in optimizer.param_groups for p in g["params"]}
        rec = {"requires_grad": {}, "in_optimizer": {}, "group": {}, "bn_training": {}}
        for name, p in self.model.named_parameters():
            part = _part(name)
            rec["requires_grad"].setdefault(part, set()).add(p.requires_grad)
            rec["in_optimizer"].setdefault(part, set()).add(id(p) in in_opt)
            if id(p) in in_opt:
                rec["group"].setdefault(part, set()).add(in_opt[id(p)]["name"])
        for name, m in self.model.named_modules():
            if isinstance(m, nn.BatchNorm2d):
                rec["bn_training"][_part(name)] = m.training
        rec["lr"] = {g["name"]: (g["lr"], g["initial_lr"]) for g in optimizer.param_groups}
        self.steps.append(rec)


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """4 epochs in one go, probed at every step; the reference every other test compares with."""
    d = tmp_path_factory.mktemp("straight")
    model = tiny_net()
    init = {k: v.clone() for k, v in model.state_dict().items()}
    probe = Probe(model)
    handle = register_optimizer_step_pre_hook(probe)
    try:
        run = _fit(d, model=model)
    finally:
        handle.remove()
    return d, run, init, probe.steps


def _changed(a: dict, b: dict, prefix: str) -> dict[str, bool]:
    return {k: not torch.equal(a[k], b[k]) for k in a if k.startswith(prefix)}


def test_frozen_parts_stay_out_until_their_epoch(straight):
    _, run, _, steps = straight
    assert len(steps) == 4 * STEPS_PER_EPOCH
    for i, rec in enumerate(steps):
        epoch = i // STEPS_PER_EPOCH + 1
        live = {"layer1": epoch >= 3, "layer2": epoch >= 2, "attention": True, "classifier": True}
        for part, trainable in live.items():
            where = f"{part} at step {i + 1} (epoch {epoch})"
            assert rec["requires_grad"][part] == {trainable}, where
            assert rec["in_optimizer"][part] == {trainable}, where
        for part in ("layer1", "layer2"):
            assert rec["bn_training"][part] == live[part], f"{part} BatchNorm at epoch {epoch}"
        # every part sits in its own group, and each group runs at its own LR on one schedule
        expected_groups = {"layer1": "backbone", "layer2": "backbone", "attention": "attention"}
        expected_groups["classifier"] = "classifier"
        assert rec["group"] == {p: {g} for p, g in expected_groups.items() if live[p]}
        factor = rec["lr"]["classifier"][0] / GROUP_LRS["classifier"]
        for g, lr in GROUP_LRS.items():
            assert rec["lr"][g] == (pytest.approx(lr * factor, rel=1e-12), lr), (g, epoch)
    assert [h["lr"]["backbone"] / h["lr"]["classifier"] for h in run.history] == pytest.approx(
        [GROUP_LRS["backbone"] / GROUP_LRS["classifier"]] * 4
    )


def test_frozen_weights_and_batchnorm_stats_do_not_move(straight):
    d, _, init, _ = straight
    after = {e: load_checkpoint(d / f"epoch_{e:03d}.pt") for e in (1, 2, 3)}
    # weights, running_mean/var and num_batches_tracked: untouched while frozen, moving once unfrozen
    for e, frozen, live in (
        (1, ("layer1", "layer2"), ()),
        (2, ("layer1",), ("layer2",)),
        (3, (), ("layer1",)),
    ):
        model = after[e]["model"]
        for part in frozen:
            assert not any(_changed(init, model, f"backbone.{part}.").values()), (part, e)
        for part in live:
            changed = _changed(after[e - 1]["model"] if e > 1 else init, model, f"backbone.{part}.")
            assert all(changed.values()), (part, e, changed)
            assert model[f"backbone.{part}.1.num_batches_tracked"] == STEPS_PER_EPOCH
        # the parts never frozen train from the first step
        assert all(_changed(init, after[1]["model"], "classifier.").values())
        assert all(_changed(init, after[1]["model"], "attention.").values())
        # the checkpoint's record of what is trainable agrees
        trainable = {_part(n) for n in after[e]["trainable"]}
        assert trainable == {"attention", "classifier"} | {p for p in ("layer1", "layer2") if p not in frozen}


def _layer2_exp_avg(state: dict) -> list[torch.Tensor]:
    """exp_avg of backbone.layer2's parameters, found through the optimizer's index order (groups in
    order, each holding its trainable parameters in model order)."""
    names = [n for n in TinyNet().state_dict() if n in set(state["trainable"])]
    names = [
        n for g in state["optimizer"]["param_groups"] for n in names if group_of(n, GROUP_LRS) == g["name"]
    ]
    index = [i for g in state["optimizer"]["param_groups"] for i in g["params"]]
    assert len(names) == len(index) == len(state["trainable"])
    return [state["optimizer"]["state"][i]["exp_avg"] for n, i in zip(names, index) if ".layer2." in n]


def _compare_with_straight(straight, run_dir, run):
    d, ref, _, _ = straight
    a, b = load_checkpoint(d / "epoch_004.pt"), load_checkpoint(run_dir / "epoch_004.pt")
    for key in ("model", "optimizer", "scheduler", "ema", "rng", "trainable", "epoch", "step"):
        assert_same(a[key], b[key], key)
    exp_a, exp_b = _layer2_exp_avg(a), _layer2_exp_avg(b)
    assert len(exp_a) == 4 and all(t.abs().sum() > 0 for t in exp_a)  # conv w, b, bn w, b; really trained
    assert all(torch.equal(x, y) for x, y in zip(exp_a, exp_b))
    for k, v in ref.model.state_dict().items():
        assert torch.equal(v, run.model.state_dict()[k]), k
    assert without_times(ref.history) == without_times(run.history)


def test_resume_after_a_disconnect_past_the_unfreeze_is_bit_identical(straight, tmp_path):
    # dies at the first batch of epoch 3 (before layer1's first step); resume from epoch 2's checkpoint,
    # the one right after layer2's unfreeze epoch
    with pytest.raises(StopAfter.Disconnect):
        _fit(tmp_path, batch_transform=StopAfter(2 * STEPS_PER_EPOCH))
    assert [c.epoch for c in nbt.list_checkpoints(tmp_path)] == [1, 2]
    run = _fit(tmp_path, resume="latest")
    _compare_with_straight(straight, tmp_path, run)


def test_resume_mid_unfreeze_epoch_is_bit_identical(straight, tmp_path):
    # dies on epoch 2's last batch; the newest checkpoint is 2 steps after layer2 joined the optimizer
    with pytest.raises(StopAfter.Disconnect):
        _fit(tmp_path, batch_transform=StopAfter(STEPS_PER_EPOCH + 3))
    latest = nbt.list_checkpoints(tmp_path)[-1]
    assert latest.mid_epoch and latest.epoch == 1 and latest.batch == 2, latest
    assert {_part(n) for n in load_checkpoint(latest.path)["trainable"]} == {
        "layer2",
        "attention",
        "classifier",
    }
    run = _fit(tmp_path, resume="latest")
    _compare_with_straight(straight, tmp_path, run)


@pytest.mark.parametrize(
    "epoch",
    [
        1,  # layer2 still frozen in the checkpoint; it unfreezes in the resumed run
        3,  # both unfrozen, with optimizer state for both
    ],
)
def test_resume_from_either_side_of_the_unfreeze_is_bit_identical(straight, tmp_path, epoch):
    name = f"epoch_{epoch:03d}.pt"
    shutil.copy(straight[0] / name, tmp_path / name)
    run = _fit(tmp_path, resume=epoch)
    _compare_with_straight(straight, tmp_path, run)


@pytest.mark.parametrize("part", ["layer9", "layer", "backbone.layer2.conv"])
def test_unfreeze_part_matching_no_parameter_is_a_clear_error(tmp_path, part):
    cfg = CFG.replace(unfreeze={2: "layer2", 3: part})
    with pytest.raises(ValueError, match=rf"unfreeze\[3\] = '{part}' matches no parameter of TinyNet"):
        _fit(tmp_path, cfg)
    assert list(nbt.list_checkpoints(tmp_path)) == []


def test_bad_unfreeze_part_loses_nothing(tmp_path):
    # the config is checked against the model before run_dir is touched, even under overwrite=True
    _fit(tmp_path, CFG.replace(epochs=1))
    before = sorted(p.name for p in tmp_path.iterdir())
    model = tiny_net()
    with pytest.raises(ValueError, match="'layer9' matches no parameter"):
        _fit(tmp_path, CFG.replace(unfreeze={2: "layer9"}), model=model, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert [c.epoch for c in nbt.list_checkpoints(tmp_path)] == [1]
    assert all(p.requires_grad for p in model.parameters())  # nothing frozen by a fit that never ran


# --- the same under fp16 (GradScaler on CPU): frozen groups join a scaled optimizer mid-run ------

FP16 = CFG.replace(precision="fp16")


@pytest.fixture(scope="module")
def straight_fp16(tmp_path_factory):
    d = tmp_path_factory.mktemp("straight_fp16")
    model = tiny_net()
    dtypes = []
    handle = model.classifier[1].register_forward_hook(lambda m, a, out: dtypes.append(out.dtype))
    try:
        run = _fit(d, FP16, model=model)
    finally:
        handle.remove()
    return d, run, dtypes


def test_unfreezing_under_fp16_neither_raises_nor_skips_a_step(straight_fp16):
    d, run, dtypes = straight_fp16
    assert dtypes[0] == torch.float32  # fit's preflight: one validation sample, before training
    assert set(dtypes[1:]) == {torch.float16}  # autocast really ran in fp16
    assert [r["epoch"] for r in run.steps] == [1, 1, 2, 2, 3, 3, 4, 4] and run.stop is None
    assert all(r["skipped"] == 0 and r["scale"] is not None for r in run.steps), run.steps
    assert not [f for f in run.findings if f.code.startswith(("amp", "nonfinite"))], run.findings
    for epoch, part in ((2, "layer2"), (3, "layer1")):
        state = load_checkpoint(d / f"epoch_{epoch:03d}.pt")
        assert state["precision"]["mode"] == "fp16" and state["precision"]["scaler"]["scale"] > 0
        assert part in {_part(n) for n in state["trainable"]}
    exp = _layer2_exp_avg(load_checkpoint(d / "epoch_004.pt"))
    assert len(exp) == 4 and all(t.abs().sum() > 0 for t in exp)  # layer2 really stepped once unfrozen


@pytest.mark.parametrize("where", ["before-unfreeze", "mid-unfreeze-epoch"])
def test_resume_across_the_unfreeze_under_fp16_is_bit_identical(straight_fp16, tmp_path, where):
    d, ref, _ = straight_fp16
    if where == "before-unfreeze":  # epoch 1's checkpoint: layer2 still frozen, unfreezes after resume
        shutil.copy(d / "epoch_001.pt", tmp_path / "epoch_001.pt")
        run = _fit(tmp_path, FP16, resume=1)
    else:  # dies 3 batches into epoch 2, the epoch layer2 joined the scaled optimizer
        with pytest.raises(StopAfter.Disconnect):
            _fit(tmp_path, FP16, batch_transform=StopAfter(STEPS_PER_EPOCH + 3))
        assert nbt.list_checkpoints(tmp_path)[-1].mid_epoch
        run = _fit(tmp_path, FP16, resume="latest")
    a, b = load_checkpoint(d / "epoch_004.pt"), load_checkpoint(tmp_path / "epoch_004.pt")
    for key in ("model", "optimizer", "scheduler", "ema", "rng", "trainable", "precision", "step"):
        assert_same(a[key], b[key], key)
    assert without_times(ref.history) == without_times(run.history)
    assert without_times(ref.steps) == without_times(run.steps)
