"""Per-term gradients on the shared trunk: found from the graph, equal to each term's own backward,
cosines as torch computes them, the step's backward unharmed, one host read."""

import pytest
import torch
from torch import nn

from nbtools.losses import MultiTaskLoss
from nbtools.step import as_float32
from nbtools.step.term_grads import TermGradProbe


class TwoHeads(nn.Module):
    """A small 3D trunk with a regression head (a 3x3 matrix) and a classification head (K)."""

    def __init__(self, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.trunk = nn.Sequential(
            nn.Conv3d(1, 4, 3, padding=1), nn.BatchNorm3d(4), nn.ReLU(),
            nn.Conv3d(4, 8, 3, padding=1), nn.BatchNorm3d(8), nn.ReLU(),
            nn.AdaptiveAvgPool3d(1), nn.Flatten(),
        )  # fmt: skip
        self.cov = nn.Linear(8, 9)
        self.k = nn.Linear(8, 4)

    def forward(self, x):
        z = self.trunk(x)
        return {"cov": self.cov(z).reshape(-1, 3, 3), "k": self.k(z)}


def batch(b=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, 1, 8, 8, 8, generator=g)
    return x, {"cov": torch.randn(b, 3, 3, generator=g), "k": torch.randint(0, 4, (b,), generator=g)}


LOSS = MultiTaskLoss({"cov": (nn.MSELoss(), 1.0), "k": (nn.CrossEntropyLoss(), 0.3)})


def own_grads(model, x, y, names):
    """Each weighted term's gradient on `names`, from a backward of its own."""
    out = []
    for head in LOSS.names:
        model.zero_grad()
        _, terms = LOSS.with_terms(model(x), y)
        terms[head].backward()
        params = dict(model.named_parameters())
        out.append(torch.cat([params[n].grad.reshape(-1) for n in names]))
    return out


@pytest.mark.parametrize("scope", ["all", "last", "nearest"])
def test_norms_and_cosine_equal_each_terms_own_backward(scope):
    model, (x, y) = TwoHeads(), batch()
    probe = TermGradProbe(model, scope=scope)
    _, terms = LOSS.with_terms(model(x), y)
    found = probe({n: terms[n] for n in LOSS.names})
    trunk = [n for n, _ in model.named_parameters() if n.startswith("trunk.")]
    expect = {
        "all": trunk,
        "last": ["trunk.3.weight", "trunk.3.bias"],
        "nearest": ["trunk.4.weight", "trunk.4.bias"],
    }
    assert probe.names == expect[scope]  # the trunk, its last conv, its last BatchNorm
    ga, gb = own_grads(model, x, y, probe.names)
    torch.testing.assert_close(found.norms, torch.stack([ga.norm(), gb.norm()]))
    torch.testing.assert_close(found.cosines[0, 1], torch.nn.functional.cosine_similarity(ga, gb, dim=0))
    rec = found.record({"cov": 1.0, "k": 0.3})
    assert set(rec) == {"term_grad", "term_cos", "term_params", "term_weight"}
    assert rec["term_grad"]["cov"] == pytest.approx(float(ga.norm()), rel=1e-5)
    assert list(rec["term_cos"]) == ["cov|k"] and -1 <= rec["term_cos"]["cov|k"] <= 1
    assert rec["term_params"].startswith(f"{scope}: trunk") and rec["term_weight"] == {"cov": 1.0, "k": 0.3}


def test_the_steps_own_backward_is_unchanged_by_the_probe():
    ref, probed = TwoHeads(), TwoHeads()
    x, y = batch()
    LOSS(ref(x), y).backward()
    total, terms = LOSS.with_terms(probed(x), y)
    TermGradProbe(probed, scope="all")({n: terms[n] for n in LOSS.names})
    total.backward()  # the graph was retained for it
    for (name, a), b in zip(ref.named_parameters(), probed.parameters()):
        torch.testing.assert_close(a.grad, b.grad, msg=name)


def test_a_scaled_backward_gives_the_same_norms():
    model, (x, y) = TwoHeads(), batch()
    _, terms = LOSS.with_terms(model(x), y)
    probe = TermGradProbe(model)
    plain = probe({n: terms[n] for n in LOSS.names})
    scaled = probe({n: terms[n] for n in LOSS.names}, scale=torch.tensor(65536.0))
    torch.testing.assert_close(plain.norms, scaled.norms)


def test_prefix_and_the_record_reads_the_device_once(monkeypatch):
    model, (x, y) = TwoHeads(), batch()
    _, terms = LOSS.with_terms(model(x), y)
    probe = TermGradProbe(model, scope="all", prefix="trunk.0.")
    reads = []
    original = torch.Tensor.tolist
    monkeypatch.setattr(torch.Tensor, "tolist", lambda t: (reads.append(1), original(t))[1])
    for name in ("item", "cpu", "__float__", "__bool__"):
        monkeypatch.setattr(torch.Tensor, name, lambda *a, _n=name: pytest.fail(f"host read {_n}"))
    found = probe({n: terms[n] for n in LOSS.names})
    assert probe.names == ["trunk.0.weight", "trunk.0.bias"] and reads == []
    monkeypatch.undo()
    monkeypatch.setattr(torch.Tensor, "tolist", lambda t: (reads.append(1), original(t))[1])
    found.record()
    assert len(reads) == 1


def test_unfreezing_finds_the_shared_set_again_and_bad_calls_are_named():
    model, (x, y) = TwoHeads(), batch()
    model.trunk[3].requires_grad_(False)
    probe = TermGradProbe(model)
    _, terms = LOSS.with_terms(model(x), y)
    probe({n: terms[n] for n in LOSS.names})
    assert probe.names == ["trunk.0.weight", "trunk.0.bias"]  # the nearest trainable shared conv
    model.trunk[3].requires_grad_(True)
    _, terms = LOSS.with_terms(model(x), y)
    probe({n: terms[n] for n in LOSS.names})
    assert probe.names == ["trunk.3.weight", "trunk.3.bias"]
    with pytest.raises(ValueError, match="need two terms or more"):
        probe({"cov": terms["cov"]})
    with pytest.raises(ValueError, match="scope must be one of"):
        TermGradProbe(model, scope="first")
    with pytest.raises(
        ValueError, match=r"no trainable parameter of the model starts with prefix 'backbone\.'"
    ):
        TermGradProbe(model, prefix="backbone.")({n: terms[n] for n in LOSS.names})
    separate = nn.ModuleDict({"a": nn.Linear(2, 1), "b": nn.Linear(2, 1)})
    v = torch.randn(3, 2)
    with pytest.raises(ValueError, match=r"the terms \['a', 'b'\] share no trainable parameter"):
        TermGradProbe(separate)({"a": separate["a"](v).sum(), "b": separate["b"](v).sum()})


def test_under_bf16_autocast_as_fit_runs_it():
    model, (x, y) = TwoHeads(), batch()
    probe = TermGradProbe(model)
    _, terms = LOSS.with_terms(model(x), y)
    ref = probe({n: terms[n] for n in LOSS.names}).norms
    with torch.autocast("cpu", dtype=torch.bfloat16):
        outputs = model(x)
    _, terms = LOSS.with_terms(as_float32(outputs), y)  # the loss outside autocast, as train_step does
    found = probe({n: terms[n] for n in LOSS.names})
    assert found.norms.dtype == torch.float32
    torch.testing.assert_close(found.norms, ref, rtol=0.05, atol=0)
