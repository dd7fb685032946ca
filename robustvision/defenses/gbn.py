"""Gated Batch Normalization (GBN; Liu et al., arXiv:2012.01654, IJCV 2023).

A GBN layer replaces one BatchNorm layer by ``K`` BatchNorm branches, one per perturbation domain (by default
``clean``, ``l1``, ``l2``, ``linf``, as in the public reference code), each with its own affine parameters and
running statistics, plus a small gate network that reads the *pre-BN* features and predicts the domain.

- **Routed** (training, and the branch-specific attacks): :func:`route_domain` sends the whole batch through
  branch ``k``; the gate's logits are computed on detached features and kept for the domain cross-entropy, so the
  gate learns from the domain loss alone and the classifier never sees the gate (as in the reference code).
- **Mixture** (inference): per sample ``sum_k softmax(gate(x))_k * BN_k(x)`` with every branch on its own
  running statistics. Gradients flow through the gate, so an attack on the model in eval mode is end to end.

Where the layers go is a parameter of :func:`convert_to_gbn`; the paper favours shallow layers.

Example:
    >>> from robustvision.models import create_model
    >>> model = create_model("lenet5", in_chans=1, image_size=28)
    >>> model = convert_to_gbn(model, layers=["net.bn1", "net.bn2"], gates={"net.bn1": "conv", "net.bn2": "fc"})
    >>> with route_domain(model, "linf"):
    ...     _ = model(torch.rand(2, 1, 28, 28))
"""

from __future__ import annotations

import contextlib
import difflib
from collections.abc import Iterator, Mapping, Sequence
from typing import Literal

import torch
from torch import nn

DEFAULT_DOMAINS: tuple[str, ...] = ("clean", "l1", "l2", "linf")
KNOWN_DOMAINS: tuple[str, ...] = ("clean", "l1", "l2", "linf")
GateKind = Literal["conv", "fc"]
GATE_KINDS: tuple[str, ...] = ("conv", "fc")

# Gate placement of the reference LeNet-5 (lenet5_conv1_fc): a conv gate after conv1, an FC gate after conv2.
REFERENCE_GBN_LAYOUT: dict[str, dict[str, str]] = {
    "lenet5": {"net.bn1": "conv", "net.bn2": "fc"},
}


def check_domains(domains: Sequence[str]) -> tuple[str, ...]:
    """Validate a domain list: known names, no repeats, at least two branches."""
    domains = tuple(domains)
    for d in domains:
        if d not in KNOWN_DOMAINS:
            close = difflib.get_close_matches(str(d), KNOWN_DOMAINS, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ValueError(f"unknown GBN domain {d!r}{hint} (known: {', '.join(KNOWN_DOMAINS)})")
    if len(set(domains)) != len(domains):
        raise ValueError(f"GBN domains must be distinct, got {domains}")
    if len(domains) < 2:
        raise ValueError(f"GBN needs at least two domains, got {domains}")
    return domains


class ConvGate(nn.Module):
    """Conv gate of the reference code: conv3x3 -> ReLU -> conv3x3 stride 2 -> ReLU -> flatten -> linear.

    Args:
        channels: C of the ``N x C x H x W`` feature map it reads.
        height, width: spatial size of that feature map.
        num_domains: K, the number of logits.
    """

    def __init__(self, channels: int, height: int, width: int, num_domains: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, 1, 1, bias=False)
        self.conv2 = nn.Conv2d(channels, 2 * channels, 3, 2, 1, bias=False)
        self.act = nn.ReLU()
        out_h, out_w = (height + 1) // 2, (width + 1) // 2  # conv3x3, stride 2, pad 1
        self.fc = nn.Linear(2 * channels * out_h * out_w, num_domains)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.act(self.conv2(self.act(self.conv1(x)))), 1))


class FCGate(nn.Module):
    """FC gate of the reference code: flatten -> linear(in -> hidden) -> ReLU -> linear(hidden -> K)."""

    def __init__(self, in_features: int, num_domains: int, hidden: int = 512) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden)
        self.act = nn.ReLU()
        self.fc2 = nn.Linear(hidden, num_domains)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(torch.flatten(x, 1))))


class GatedBatchNorm(nn.Module):
    """Base of :class:`GatedBatchNorm2d` and :class:`GatedBatchNorm1d`.

    Args:
        num_features: C, the channel count of the BN it replaces.
        feature_shape: the per-sample shape of the input (``(C, H, W)`` for 2d, ``(C,)`` or ``(C, L)`` for 1d);
            the gate's linear layers are sized from it.
        domains: branch names, in branch order.
        gate: ``conv`` (2d only) or ``fc``.
        gate_hidden: hidden width of the FC gate (512 in the reference).
        eps, momentum, affine, track_running_stats: passed to every BN branch.

    Attributes:
        route: index of the branch every sample goes through, or None for the gated mixture.
        gate_override: fixed ``N x K`` (or ``K``) gate weights replacing the gate's softmax (tests, attacks).
        last_gate_logits: the gate's logits from the latest routed forward in training mode (for the domain loss),
            or from the latest mixture forward (gate accuracy, gate-steering attacks).
        gate_source: a layer whose gate decision this one reuses (see :func:`tie_gates`), or None; a tied layer
            has no gate of its own.
    """

    bn_class: type[nn.modules.batchnorm._BatchNorm] = nn.BatchNorm2d
    feature_dims: tuple[int, ...] = (3,)

    def __init__(
        self,
        num_features: int,
        feature_shape: Sequence[int],
        domains: Sequence[str] = DEFAULT_DOMAINS,
        gate: GateKind = "conv",
        gate_hidden: int = 512,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
    ) -> None:
        super().__init__()
        self.domains = check_domains(domains)
        feature_shape = tuple(int(s) for s in feature_shape)
        if len(feature_shape) not in self.feature_dims or feature_shape[0] != num_features:
            raise ValueError(
                f"{type(self).__name__}: feature_shape must be {self.shape_help()} with C={num_features}, "
                f"got {feature_shape}"
            )
        if gate not in GATE_KINDS:
            raise ValueError(f"unknown gate kind {gate!r}; expected one of {GATE_KINDS}")
        self.num_features = int(num_features)
        self.feature_shape = feature_shape
        self.gate_kind = gate
        self.bns = nn.ModuleList(
            self.bn_class(num_features, eps, momentum, affine, track_running_stats) for _ in self.domains
        )
        k = len(self.domains)
        if gate == "conv":
            if len(feature_shape) != 3:
                raise ValueError(f"a conv gate needs N x C x H x W features, got feature shape {feature_shape}")
            self.gate = ConvGate(num_features, feature_shape[1], feature_shape[2], k)
        else:
            in_features = 1
            for s in feature_shape:
                in_features *= s
            self.gate = FCGate(in_features, k, gate_hidden)
        self.route: int | None = None
        self.gate_override: torch.Tensor | None = None
        self.last_gate_logits: torch.Tensor | None = None
        self.last_gate_weights: torch.Tensor | None = None
        self._gate_source: list[GatedBatchNorm] = []  # a plain list: the source is not a submodule of this layer

    def shape_help(self) -> str:
        return "(C, H, W)"

    @property
    def gate_source(self) -> GatedBatchNorm | None:
        """The layer whose gate decision this layer reuses (None: it has its own gate)."""
        return self._gate_source[0] if self._gate_source else None

    def tie_to(self, source: GatedBatchNorm) -> None:
        """Reuse ``source``'s gate weights (computed earlier in the same forward) and drop this layer's gate."""
        if source is self or source.gate_source is not None:
            raise ValueError("a GBN layer can only reuse the decision of another layer that has its own gate")
        if source.domains != self.domains:
            raise ValueError(f"tied GBN layers need the same domains, got {source.domains} and {self.domains}")
        self._gate_source = [source]
        self.gate = None

    def current_gate_logits(self) -> torch.Tensor | None:
        """The gate logits that weighted this layer in the latest forward (the source's for a tied layer)."""
        return self.gate_source.last_gate_logits if self.gate_source is not None else self.last_gate_logits

    @property
    def num_domains(self) -> int:
        return len(self.domains)

    def domain_index(self, domain: str | int) -> int:
        """Branch index of ``domain`` (a name or an index); a clear error when the layer has no such branch."""
        if isinstance(domain, int):
            if not 0 <= domain < self.num_domains:
                raise ValueError(f"GBN branch index {domain} out of range for domains {self.domains}")
            return domain
        if domain not in self.domains:
            raise ValueError(f"GBN domain {domain!r} is not one of this model's branches {self.domains}")
        return self.domains.index(domain)

    def load_from_bn(self, bn: nn.modules.batchnorm._BatchNorm) -> None:
        """Copy a BatchNorm's affine parameters and running statistics into every branch."""
        state = bn.state_dict()
        for branch in self.bns:
            branch.load_state_dict(state)

    def gate_logits(self, x: torch.Tensor) -> torch.Tensor:
        """The gate's ``N x K`` domain logits for pre-BN features ``x``."""
        self.check_input(x)
        return self.gate(x)

    def gate_weights(self, x: torch.Tensor) -> torch.Tensor:
        """The per-sample mixture weights ``N x K`` (softmax of the gate, or the override); rows sum to one."""
        if self.gate_override is not None:
            w = self.gate_override.to(device=x.device, dtype=x.dtype)
            return w.expand(x.shape[0], -1) if w.dim() == 1 else w
        if self.gate_source is not None:
            w = self.gate_source.last_gate_weights
            if w is None or w.shape[0] != x.shape[0]:
                raise RuntimeError("a tied GBN layer runs before the layer whose gate it reuses")
            return w
        logits = self.gate_logits(x)
        # Kept with its graph so adaptive attacks can steer the gate (detach it yourself to keep it around).
        self.last_gate_logits = logits
        self.last_gate_weights = torch.softmax(logits, dim=1)
        return self.last_gate_weights

    def check_input(self, x: torch.Tensor) -> None:
        if tuple(x.shape[1:]) != self.feature_shape:
            raise ValueError(
                f"{type(self).__name__} was built for features of shape {self.feature_shape} per sample, "
                f"got {tuple(x.shape[1:])}"
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.route is not None:
            # The gate learns the domain from detached features: the classification loss never reaches it and its
            # loss never reaches the backbone (the reference steps a gate-only optimiser on it).
            # Attacks on a routed model (eval mode) skip the gate: nothing reads it there.
            own_gate = self.training and self.gate_source is None
            self.last_gate_logits = self.gate_logits(x.detach()) if own_gate else None
            self.last_gate_weights = None
            return self.bns[self.route](x)
        if self.training and self.gate_override is None:
            raise RuntimeError(
                "a GatedBatchNorm in training mode needs a domain: wrap the forward in route_domain(model, domain)"
            )
        w = self.gate_weights(x)
        if w.shape != (x.shape[0], self.num_domains):
            raise ValueError(f"gate weights must be N x {self.num_domains}, got {tuple(w.shape)}")
        view = (x.shape[0], 1, *([1] * (x.dim() - 2)))
        out = w[:, 0].view(view) * self.bns[0](x)
        for k in range(1, self.num_domains):
            out = out + w[:, k].view(view) * self.bns[k](x)
        return out

    def extra_repr(self) -> str:
        return f"{self.num_features}, domains={self.domains}, gate={self.gate_kind!r}, features={self.feature_shape}"


class GatedBatchNorm2d(GatedBatchNorm):
    """GBN for ``N x C x H x W`` feature maps (replaces ``nn.BatchNorm2d``).

    Shape: ``N x C x H x W`` -> same.
    """

    bn_class = nn.BatchNorm2d
    feature_dims = (3,)


class GatedBatchNorm1d(GatedBatchNorm):
    """GBN for ``N x C`` or ``N x C x L`` features (replaces ``nn.BatchNorm1d``); its gate is the FC gate.

    Shape: ``N x C`` (or ``N x C x L``) -> same.
    """

    bn_class = nn.BatchNorm1d
    feature_dims = (1, 2)

    def __init__(self, num_features: int, feature_shape: Sequence[int] | None = None, **kwargs) -> None:
        kwargs.setdefault("gate", "fc")
        if kwargs["gate"] != "fc":
            raise ValueError("GatedBatchNorm1d supports only the fc gate")
        super().__init__(num_features, feature_shape or (num_features,), **kwargs)

    def shape_help(self) -> str:
        return "(C,) or (C, L)"


def gbn_layers(model: nn.Module) -> list[tuple[str, GatedBatchNorm]]:
    """The ``(name, layer)`` pairs of every GBN layer in ``model``."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, GatedBatchNorm)]


def gate_parameters(model: nn.Module) -> list[nn.Parameter]:
    """Parameters of every GBN gate (stepped by the gate optimiser)."""
    return [p for _, layer in gbn_layers(model) if layer.gate is not None for p in layer.gate.parameters()]


def tie_gates(model: nn.Module) -> nn.Module:
    """Gate once: every GBN layer after the first reuses the first layer's gate decision (in place; returns model).

    The deeper layers lose their own gates, so an attacker who wants a different branch deeper must change the
    first layer's decision, which is the one trained on the input-level statistics that separate the norms best.
    """
    layers = [m for _, m in gbn_layers(model)]
    if len(layers) < 2:
        raise ValueError("tying gates needs at least two GBN layers")
    for m in layers[1:]:
        m.tie_to(layers[0])
    return model


def gates_tied(model: nn.Module) -> bool:
    """Whether the deeper GBN layers of ``model`` reuse the first layer's gate (see :func:`tie_gates`)."""
    return any(m.gate_source is not None for _, m in gbn_layers(model))


def model_domains(model: nn.Module) -> tuple[str, ...]:
    """The domain list shared by every GBN layer of ``model`` (an error when there is none)."""
    layers = gbn_layers(model)
    if not layers:
        raise ValueError("the model has no GatedBatchNorm layer; convert it with convert_to_gbn first")
    return layers[0][1].domains


@contextlib.contextmanager
def route_domain(model: nn.Module, domain: str | int | None) -> Iterator[None]:
    """Route every GBN layer of ``model`` through one branch (``None``: the gated mixture); restored after."""
    layers = [m for _, m in gbn_layers(model)]
    old = [m.route for m in layers]
    try:
        for m in layers:
            m.route = None if domain is None else m.domain_index(domain)
            m.last_gate_logits = None
            m.last_gate_weights = None
        yield
    finally:
        for m, r in zip(layers, old, strict=True):
            m.route = r


@contextlib.contextmanager
def force_gate(model: nn.Module, weights: torch.Tensor) -> Iterator[None]:
    """Replace every GBN gate's softmax by fixed ``weights`` (``K`` or ``N x K``), e.g. a one-hot vector."""
    layers = [m for _, m in gbn_layers(model)]
    old = [m.gate_override for m in layers]
    try:
        for m in layers:
            if weights.shape[-1] != m.num_domains:
                raise ValueError(f"forced gate weights need {m.num_domains} columns, got {tuple(weights.shape)}")
            m.gate_override = weights
        yield
    finally:
        for m, w in zip(layers, old, strict=True):
            m.gate_override = w


def collect_gate_logits(model: nn.Module) -> list[torch.Tensor]:
    """The gate logits kept by every GBN layer during the latest routed forward."""
    out = []
    for name, m in gbn_layers(model):
        if m.gate_source is not None:
            continue  # a tied layer has no gate of its own to train
        if m.last_gate_logits is None:
            raise RuntimeError(f"GBN layer {name!r} holds no gate logits: run a forward inside route_domain first")
        out.append(m.last_gate_logits)
    return out


def _resolve_module(model: nn.Module, name: str) -> tuple[nn.Module, str, nn.Module]:
    modules = dict(model.named_modules())
    if name not in modules:
        bn_names = [n for n, m in modules.items() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        close = difflib.get_close_matches(name, bn_names, n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        shown = ", ".join(bn_names[:8]) + (", ..." if len(bn_names) > 8 else "")
        raise ValueError(f"layer {name!r} does not exist in the model{hint} (BatchNorm layers: {shown or 'none'})")
    parent_name, _, attr = name.rpartition(".")
    return modules[parent_name] if parent_name else model, attr, modules[name]


def batchnorm_layer_names(model: nn.Module) -> list[str]:
    """Dotted names of every BatchNorm1d/2d layer of ``model`` (candidates for :func:`convert_to_gbn`)."""
    return [n for n, m in model.named_modules() if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)) and n]


def _probe_shapes(model: nn.Module, names: Sequence[str], input_shape: Sequence[int]) -> dict[str, tuple[int, ...]]:
    """Per-sample input shapes of the named layers, from one forward of a zero batch of two in eval mode."""
    modules = dict(model.named_modules())
    shapes: dict[str, tuple[int, ...]] = {}

    def recorder(name: str):
        def hook(_module: nn.Module, args: tuple) -> None:
            shapes.setdefault(name, tuple(args[0].shape[1:]))

        return hook

    hooks = [modules[n].register_forward_pre_hook(recorder(n)) for n in names]
    was_training = model.training
    model.eval()
    try:
        p = next(model.parameters(), None)
        device = p.device if p is not None else torch.device("cpu")
        with torch.no_grad():
            model(torch.zeros(2, *input_shape, device=device))
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    missing = [n for n in names if n not in shapes]
    if missing:
        raise ValueError(f"layers {missing} are never called by the model's forward; they cannot become GBN")
    return shapes


def convert_to_gbn(
    model: nn.Module,
    layers: Sequence[str] | None = None,
    *,
    domains: Sequence[str] = DEFAULT_DOMAINS,
    gates: GateKind | Mapping[str, GateKind] | None = None,
    gate_hidden: int = 512,
    input_shape: Sequence[int] | None = None,
) -> nn.Module:
    """Replace chosen BatchNorm layers of ``model`` by GBN layers, in place; returns ``model``.

    Every branch starts as a copy of the original BN (affine parameters and running statistics), so before any
    training the converted model computes what it computed before, whatever the gate says (its weights sum to one).

    Args:
        model: any module; an :class:`~robustvision.models.ImageClassifier` knows its input shape.
        layers: dotted names of ``BatchNorm1d``/``BatchNorm2d`` modules (``None``: every BatchNorm layer; the
            reference layout for LeNet-5 is ``["net.bn1", "net.bn2"]``).
        domains: branch names, e.g. ``("clean", "l1", "l2", "linf")``.
        gates: ``conv`` or ``fc`` for every layer, or a mapping from layer name to kind (default: ``conv`` for
            2d layers, ``fc`` for 1d layers).
        gate_hidden: hidden width of FC gates.
        input_shape: ``(C, H, W)`` of the model's input, needed to size the gates when ``model`` has no
            ``in_chans``/``image_size`` attributes.

    Raises:
        ValueError: unknown or non-BatchNorm layer names, unknown domains or gate kinds, layers never called.
    """
    domains = check_domains(domains)
    names = list(layers) if layers is not None else batchnorm_layer_names(model)
    if not names:
        raise ValueError("the model has no BatchNorm layer to convert to GBN")
    if len(set(names)) != len(names):
        raise ValueError(f"layer names must be distinct, got {names}")
    targets = {}
    for name in names:
        parent, attr, module = _resolve_module(model, name)
        if isinstance(module, GatedBatchNorm):
            raise ValueError(f"layer {name!r} is already a GatedBatchNorm")
        if not isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
            raise ValueError(f"layer {name!r} is a {type(module).__name__}, not a BatchNorm1d/BatchNorm2d")
        targets[name] = (parent, attr, module)
    if isinstance(gates, Mapping):
        unknown = sorted(set(gates) - set(names))
        if unknown:
            raise ValueError(f"gate kinds given for layers that are not converted: {unknown}")
    if input_shape is None:
        if not (hasattr(model, "in_chans") and hasattr(model, "image_size")):
            raise ValueError("convert_to_gbn needs input_shape=(C, H, W) for a model without in_chans/image_size")
        input_shape = (model.in_chans, model.image_size, model.image_size)
    shapes = _probe_shapes(model, names, input_shape)
    for name, (parent, attr, bn) in targets.items():
        is_2d = isinstance(bn, nn.BatchNorm2d)
        kind = gates.get(name) if isinstance(gates, Mapping) else gates
        kind = kind or ("conv" if is_2d else "fc")
        cls = GatedBatchNorm2d if is_2d else GatedBatchNorm1d
        gbn = cls(
            bn.num_features,
            feature_shape=shapes[name],
            domains=domains,
            gate=kind,
            gate_hidden=gate_hidden,
            eps=bn.eps,
            momentum=bn.momentum,
            affine=bn.affine,
            track_running_stats=bn.track_running_stats,
        )
        gbn.load_from_bn(bn)
        p = next(bn.parameters(), None)
        buf = next(bn.buffers(), None)
        ref = p if p is not None else buf
        if ref is not None:
            gbn.to(ref.device)
        gbn.train(bn.training)
        setattr(parent, attr, gbn)
    return model


def gbn_spec(model: nn.Module) -> dict:
    """The conversion settings of a GBN model (layers, domains, gate kinds, gate width), for its model card."""
    layers = gbn_layers(model)
    if not layers:
        raise ValueError("the model has no GatedBatchNorm layer")
    hidden = {n: m.gate.fc1.out_features for n, m in layers if isinstance(m.gate, FCGate)}
    return {
        "layers": [n for n, _ in layers],
        "domains": list(layers[0][1].domains),
        "gates": {n: m.gate_kind for n, m in layers},
        "gate_hidden": next(iter(hidden.values()), 512),
        "gate_once": gates_tied(model),
    }
