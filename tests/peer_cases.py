"""Test-case families after curvlinops' `test/cases.py` (the list of families is taken as a fact; the code is ours).

Each case builds, in float64 and from its own seed, a model in eval mode, the user's loss (a `torch.nn` loss or an `F`
function with its own reduction), inputs X (n, ...) and targets Y. The families: MLP and CNN models; BatchNorm (1d, 2d)
and dropout in eval mode; frozen (requires_grad=False) and unused parameters; MSE / cross-entropy / BCE-with-logits with
mean and sum reductions; extra output dimensions (sequence-like outputs (b, s, c), with cross-entropy over (b, c, s),
or averaged over the sequence);
a class-weighted cross-entropy with ignored targets. Multiple batches come from how the test feeds the data
(a DataLoader with an uneven last batch).
"""
from __future__ import annotations
import functools
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable
import torch
import torch.nn.functional as F
from torch import nn

D = torch.float64
N = 11          # rows; a DataLoader with BATCH = 4 gives batches of 4, 4, 3
BATCH = 4
S = 3           # sequence length of the extra output dimension


class ClassesSecond(nn.Module):
    "(b, s, c) -> (b, c, s): the layout torch's cross-entropy wants for outputs with extra dimensions."
    def forward(self, x): return x.movedim(-1, 1)


class MeanOverSequence(nn.Module):
    "(b, s, c) -> (b, c): the shared-weight outputs of a sequence averaged before the loss (curvlinops' 'reduce' setting)."
    def forward(self, x): return x.mean(1)


class Unused(nn.Module):
    "An MLP with one more Linear layer that forward never calls: its parameters are trainable but do not enter the risk."
    def __init__(self, din, dh, dout):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(din, dh), nn.Tanh(), nn.Linear(dh, dout))
        self.spare = nn.Linear(dh, dh)
    def forward(self, x): return self.body(x)


# ------------------------------------------------------------------------------------------------- targets
def _regression(g, shape): return torch.randn(shape, generator=g, dtype=D)
def _classes(g, shape, C): return torch.randint(0, C, shape, generator=g)
def _binary(g, shape): return torch.randint(0, 2, shape, generator=g).to(D)


def _randomise(model, g):
    "Give every parameter and BatchNorm running statistic a non-trivial value (weights O(1), variances in [0.5, 2])."
    with torch.no_grad():
        for p in model.parameters(): p.copy_(torch.randn(p.shape, generator=g, dtype=D)*0.7)
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g, dtype=D)*0.5)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g, dtype=D)*1.5 + 0.5)
    return model


@dataclass(frozen=True)
class PeerCase:
    "One case: `make(g)` -> (model, loss, X, Y) from a seeded generator; `tags` name its special structure."
    id: str
    make: Callable
    tags: frozenset = field(default_factory=frozenset)
    seed: int = 0

    def build(self):
        "(model in eval mode, float64, the loss, X, Y), the same on every call."
        g = torch.Generator().manual_seed(self.seed)
        model, loss, X, Y = self.make(g)
        return model, loss, X, Y


def _mlp(din=4, dh=5, dout=3, act=nn.Tanh): return nn.Sequential(nn.Linear(din, dh), act(), nn.Linear(dh, dout))


def _prep(model, g):
    return _randomise(model.to(D), g).eval()


# --------------------------------------------------------------------------------------------- the families
def _mlp_case(loss_name, red, dout=3, act=nn.Tanh):
    def make(g):
        model = _prep(_mlp(dout=dout, act=act), g)
        X = torch.randn(N, 4, generator=g, dtype=D)
        if loss_name == 'mse': return model, nn.MSELoss(reduction=red), X, _regression(g, (N, dout))
        if loss_name == 'ce': return model, nn.CrossEntropyLoss(reduction=red), X, _classes(g, (N,), dout)
        return model, nn.BCEWithLogitsLoss(reduction=red), X, _binary(g, (N, dout))
    return make


def _seq_case(loss_name, red):
    "Token-wise MLP on (b, s, d) inputs: outputs (b, s, c) (MSE, BCE) or (b, c, s) with targets (b, s) (CE)."
    def make(g):
        X = torch.randn(N, S, 4, generator=g, dtype=D)
        if loss_name == 'ce':
            model = _prep(nn.Sequential(_mlp(dout=3), ClassesSecond()), g)
            return model, nn.CrossEntropyLoss(reduction=red), X, _classes(g, (N, S), 3)
        model = _prep(_mlp(dout=2), g)
        if loss_name == 'mse': return model, nn.MSELoss(reduction=red), X, _regression(g, (N, S, 2))
        return model, nn.BCEWithLogitsLoss(reduction=red), X, _binary(g, (N, S, 2))
    return make


def _seq_reduce(g):
    "Token-wise MLP on (b, s, d), averaged over the sequence, then a per-row cross-entropy."
    model = _prep(nn.Sequential(_mlp(dout=3), MeanOverSequence()), g)
    X = torch.randn(N, S, 4, generator=g, dtype=D)
    return model, nn.CrossEntropyLoss(), X, _classes(g, (N,), 3)


def _cnn_case(loss_name, red):
    "Conv -> ReLU -> MaxPool -> Conv -> Tanh -> Linear on (n, 2, 6, 6) images (p = 57 + 112 + 15 = 184)."
    def make(g):
        model = _prep(nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(3, 4, 3),
                                    nn.Tanh(), nn.Flatten(), nn.Linear(4, 3)), g)
        X = torch.randn(N, 2, 6, 6, generator=g, dtype=D)
        if loss_name == 'ce': return model, nn.CrossEntropyLoss(reduction=red), X, _classes(g, (N,), 3)
        return model, nn.MSELoss(reduction=red), X, _regression(g, (N, 3))
    return make


def _bn1d(g):
    model = _prep(nn.Sequential(OrderedDict(fc1=nn.Linear(4, 5), bn=nn.BatchNorm1d(5), act=nn.Tanh(),
                                            fc2=nn.Linear(5, 3))), g)
    X = torch.randn(N, 4, generator=g, dtype=D)
    return model, nn.CrossEntropyLoss(), X, _classes(g, (N,), 3)


def _bn2d(g):
    model = _prep(nn.Sequential(OrderedDict(conv=nn.Conv2d(1, 3, 3, padding=1), bn=nn.BatchNorm2d(3), act=nn.Tanh(),
                                            flat=nn.Flatten(), fc=nn.Linear(3*4*4, 2))), g)
    X = torch.randn(N, 1, 4, 4, generator=g, dtype=D)
    return model, nn.MSELoss(), X, _regression(g, (N, 2))


def _dropout(g):
    model = _prep(nn.Sequential(OrderedDict(fc1=nn.Linear(4, 6), act=nn.Tanh(), drop=nn.Dropout(0.5),
                                            fc2=nn.Linear(6, 2))), g)
    X = torch.randn(N, 4, generator=g, dtype=D)
    return model, nn.BCEWithLogitsLoss(), X, _binary(g, (N, 2))


def _frozen(g):
    "The first layer's weight is frozen (requires_grad=False); its bias and the second layer train."
    model = _prep(_mlp(), g)
    model[0].weight.requires_grad_(False)
    X = torch.randn(N, 4, generator=g, dtype=D)
    return model, nn.MSELoss(), X, _regression(g, (N, 3))


def _unused(g):
    model = _prep(Unused(4, 5, 3), g)
    X = torch.randn(N, 4, generator=g, dtype=D)
    return model, nn.CrossEntropyLoss(reduction='sum'), X, _classes(g, (N,), 3)


def _weighted_ignore(g):
    "Sequence CE with class weights and ignored targets (ignore_index=-100): torch's mean divides by Σ weight[y] over the kept targets."
    model = _prep(nn.Sequential(_mlp(dout=3), ClassesSecond()), g)
    X = torch.randn(N, S, 4, generator=g, dtype=D)
    Y = _classes(g, (N, S), 3)
    Y[torch.rand((N, S), generator=g) < 0.25] = -100
    Y[0, 0] = -100
    w = torch.tensor([0.5, 1.0, 2.5], dtype=D)
    return model, nn.CrossEntropyLoss(weight=w), X, Y


def _functional(name):
    "The loss as an `F` function (its default reduction) or a `functools.partial` that states one."
    def make(g):
        model = _prep(_mlp(), g)
        X = torch.randn(N, 4, generator=g, dtype=D)
        if name == 'F.cross_entropy': return model, F.cross_entropy, X, _classes(g, (N,), 3)
        return model, functools.partial(F.mse_loss, reduction='sum'), X, _regression(g, (N, 3))
    return make


CASES = ([PeerCase(f"mlp-{l}-{r}", _mlp_case(l, r)) for l in ('mse', 'ce', 'bce') for r in ('mean', 'sum')]
         + [PeerCase("mlp1-bce-mean", _mlp_case('bce', 'mean', dout=1)),
            PeerCase("mlp-relu-ce-mean", _mlp_case('ce', 'mean', act=nn.ReLU))]
         + [PeerCase(f"seq-{l}-{r}", _seq_case(l, r)) for l in ('mse', 'ce', 'bce') for r in ('mean', 'sum')]
         + [PeerCase("seq-reduce-ce-mean", _seq_reduce)]
         + [PeerCase(f"cnn-{l}-{r}", _cnn_case(l, r)) for l, r in (('ce', 'mean'), ('mse', 'sum'))]
         + [PeerCase("bn1d-eval-ce", _bn1d, frozenset({'train_refused'})),
            PeerCase("bn2d-eval-mse", _bn2d, frozenset({'train_refused'})),
            PeerCase("dropout-eval-bce", _dropout, frozenset({'train_refused'})),
            PeerCase("frozen-mse", _frozen, frozenset({'frozen'})),
            PeerCase("unused-ce-sum", _unused, frozenset({'unused'})),
            PeerCase("seq-ce-weighted-ignore", _weighted_ignore),
            PeerCase("F.cross_entropy", _functional('F.cross_entropy')),
            PeerCase("partial-mse-sum", _functional('partial'))])
