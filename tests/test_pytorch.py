"""The pytorch layout loads into real torch.nn modules (strict load_state_dict) that reproduce Keras' outputs.

The torch graph is built from the exported npz alone: its ``__model__`` description gives the layers and
wiring, its arrays the state dicts. Keras semantics that plain modules lack are applied around them:
go_backwards flips the input (Keras returns the sequence in processing order), Bidirectional's last output
of the backward direction is its output at time 0, merge modes, return_state, initial_state and stateful
states. Masked fixtures are left out: nn.LSTM/GRU/RNN have no per-step mask (packed sequences only handle
post-padding, and Keras also skips pre-padded and interior steps).
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
import pytest

import converter
from tests.fixture_index import ATOL, max_abs_error, one_form_each

torch = pytest.importorskip("torch")
nn = torch.nn

from converter.export.npz import write_npz  # noqa: E402
from tests.test_npz_json import PYTORCH_REFUSED  # noqa: E402

RUN = [fx for fx in one_form_each() if not fx.entry["masked"] and fx.name not in PYTORCH_REFUSED]
REQUIRED = {"tutorial", "stacked", "gru_reset_after", "simple_rnn", "bidi_concat", "lstm_states", "dense_seq"}
MODULES = {"lstm": nn.LSTM, "gru": nn.GRU, "simple_rnn": nn.RNN}
MERGES = {
    "add": lambda xs: sum(xs[1:], xs[0]),
    "subtract": lambda xs: xs[0] - xs[1],
    "multiply": lambda xs: functools.reduce(torch.mul, xs),
    "average": lambda xs: sum(xs[1:], xs[0]) / len(xs),
    "maximum": lambda xs: functools.reduce(torch.maximum, xs),
    "minimum": lambda xs: functools.reduce(torch.minimum, xs),
}
ACTIVATIONS = {
    "linear": lambda x: x,
    "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
    "relu": torch.relu,
    "softmax": lambda x: torch.softmax(x, dim=-1),
    "elu": torch.nn.functional.elu,
}
F = torch.nn.functional


def keras_pads(n: int, k: int, stride: int, dilation: int, padding: str) -> tuple[int, int]:
    """TensorFlow's padding of one axis (the odd step of 'same' at the end; 'causal' all at the start)."""
    effective = (k - 1) * dilation + 1
    if padding == "valid":
        return 0, 0
    if padding == "causal":
        return effective - 1, 0
    total = max((-(-n // stride) - 1) * stride + effective - n, 0)
    return total // 2, total - total // 2


class Separable(nn.Module):
    """The two modules of a separable convolution, with the state-dict keys the pytorch layout uses."""

    def __init__(self, conv: type, cfg: dict) -> None:
        super().__init__()
        c, m, k = cfg["in_channels"], cfg["depth_multiplier"], cfg["kernel_size"]
        self.depthwise = conv(c, c * m, k, cfg["strides"], 0, cfg["dilation_rate"], groups=c, bias=False)
        self.pointwise = conv(c * m, cfg["filters"], 1, bias=cfg["use_bias"])

    def forward(self, x):
        return self.pointwise(self.depthwise(x))


def _flatten(x, cfg: dict):
    if cfg["data_format"] == "channels_first" and x.dim() > 2:
        x = x.permute(0, *range(2, x.dim()), 1)
    return x.flatten(1)


def _pool1d(x, cfg: dict, mode: str):
    """Keras' MaxPooling1D/AveragePooling1D with torch's pools: TF's SAME padding, padding left out."""
    functional = torch.nn.functional
    channels_last = cfg["data_format"] == "channels_last"
    x = x.transpose(1, 2) if channels_last else x  # (batch, channels, steps)
    k, s, steps = cfg["pool_size"], cfg["strides"], x.shape[-1]
    total = max((-(-steps // s) - 1) * s + k - steps, 0) if cfg["padding"] == "same" else 0
    pads = (total // 2, total - total // 2)
    if mode == "max":
        y = functional.max_pool1d(functional.pad(x, pads, value=-float("inf")), k, s)
    else:
        valid = functional.pad(torch.ones_like(x[:, :1]), pads)
        y = functional.avg_pool1d(functional.pad(x, pads), k, s) / functional.avg_pool1d(valid, k, s)
    return y.transpose(1, 2) if channels_last else y


def _steps_axis(cfg: dict) -> int:
    return 1 if cfg["data_format"] == "channels_last" else 2


#: Weightless shape and pooling ops (masked fixtures are not run here, so no masks).
SHAPE_AND_POOLING = {
    "repeat_vector": lambda x, cfg: x.unsqueeze(1).repeat(1, cfg["n"], 1),
    "flatten": _flatten,
    "reshape": lambda x, cfg: x.reshape(x.shape[0], *cfg["target_shape"]),
    "permute": lambda x, cfg: x.permute(0, *cfg["dims"]),
    "global_max_pooling1d": lambda x, cfg: x.amax(dim=_steps_axis(cfg), keepdim=cfg["keepdims"]),
    "global_average_pooling1d": lambda x, cfg: x.mean(dim=_steps_axis(cfg), keepdim=cfg["keepdims"]),
    "max_pooling1d": lambda x, cfg: _pool1d(x, cfg, "max"),
    "average_pooling1d": lambda x, cfg: _pool1d(x, cfg, "average"),
}


class TorchGraph:
    """A Keras graph run with torch.nn modules, built from an lstm-convert npz in the pytorch layout."""

    def __init__(self, path: Path) -> None:
        with np.load(path, allow_pickle=False) as data:
            self.doc = json.loads(str(data["__model__"]))
            arrays = {k: torch.from_numpy(data[k]) for k in data.files if k != "__model__"}
        assert self.doc["layout"] == "pytorch"
        self.arrays = arrays  # tensors of layers without a torch.nn module (Normalization)
        self.keras_major = 2 if self.doc["source"]["keras_version"].startswith("2") else 3
        self.modules: dict[str, nn.Module] = {}
        self.states: dict[str, tuple] = {}  # stateful layers' states between calls
        for node in self.doc["nodes"]:
            if node.get("weights_of"):  # a later call of a shared layer: the same module
                self.modules[node["name"]] = self.modules[node["weights_of"]]
                continue
            module = self._module(node)
            if module is not None:
                prefix = node["name"] + "."
                state = {k[len(prefix) :]: v for k, v in arrays.items() if k.startswith(prefix)}
                module.load_state_dict(state, strict=True)  # every key present, none left over
                self.modules[node["name"]] = module.eval()

    @staticmethod
    def _module(node: dict) -> nn.Module | None:
        cfg = node["config"]
        if node["type"] in ("recurrent", "bidirectional", "stacked"):
            first = {"bidirectional": cfg.get("forward"), "stacked": (cfg.get("cells") or [None])[0]}
            r = first.get(node["type"]) or cfg
            extra = {"nonlinearity": r["activation"]} if r["kind"] == "simple_rnn" else {}
            layers = len(cfg["cells"]) if node["type"] == "stacked" else 1  # a stack is one multi-layer module
            return MODULES[r["kind"]](
                r["input_dim"], r["units"], bias=r["use_bias"], batch_first=True,
                bidirectional=node["type"] == "bidirectional", num_layers=layers, **extra,
            )  # fmt: skip
        if node["type"] == "dense":
            fan_in = node["tensors"][0]["shape"][1]
            return nn.Linear(fan_in, cfg["units"], bias=cfg["use_bias"])
        if node["type"] == "embedding":
            return nn.Embedding(cfg["input_dim"], cfg["output_dim"])
        if node["type"] == "conv":
            conv = nn.Conv1d if cfg["rank"] == 1 else nn.Conv2d
            k, c = cfg["kernel_size"], cfg["in_channels"]
            if cfg["kind"] == "separable":
                return Separable(conv, cfg)
            groups = cfg["groups"] if cfg["kind"] == "conv" else c
            return conv(c, cfg["filters"], k, cfg["strides"], 0, cfg["dilation_rate"], groups, bias=cfg["use_bias"])
        if node["type"] == "time_distributed":
            return TorchGraph._module({**node, "type": cfg["inner_type"], "config": cfg["inner"]})
        keys = {t["key"].rsplit(".", 1)[-1] for t in node["tensors"]}
        if node["type"] == "batch_normalization":
            return nn.BatchNorm1d(cfg["param_shape"][0], eps=cfg["epsilon"], affine="weight" in keys)
        if node["type"] == "rms_normalization":
            return nn.RMSNorm(cfg["param_shape"], eps=cfg["epsilon"])
        if node["type"] == "layer_normalization" and "weight" in keys:
            return nn.LayerNorm(cfg["param_shape"], eps=cfg["epsilon"], bias="bias" in keys)
        if node["type"] == "multi_head_attention":
            dq, dk, dv, _ = cfg["dims"]
            return nn.MultiheadAttention(dq, cfg["num_heads"], bias=cfg["use_bias"], kdim=dk, vdim=dv, batch_first=True)
        if node["type"] == "attention" and node["tensors"]:
            module = nn.Module()  # Keras' scalars or per-feature scale, as plain parameters
            for t in node["tensors"]:
                module.register_parameter(t["key"].split(".")[-1], nn.Parameter(torch.zeros(t["shape"])))
            return module
        return None

    def reset(self) -> None:
        self.states.clear()

    @torch.no_grad()
    def __call__(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        values = {(s["name"], 0): torch.from_numpy(x) for s, x in zip(self.doc["inputs"], inputs, strict=True)}
        for node in self.doc["nodes"]:
            xs = [values[(r["node"], r["index"])] for r in node["inputs"]]
            init = [values[(r["node"], r["index"])] for r in node["initial_state"]]
            for k, out in enumerate(self._node(node, xs, init)):
                values[(node["name"], k)] = out
        return [values[(o["node"], o["index"])].numpy() for o in self.doc["outputs"]]

    def _node(self, node: dict, xs: list, init: list) -> list:
        kind, cfg, name = node["type"], node["config"], node["name"]
        if kind in ("recurrent", "bidirectional"):
            return self._recurrent(node, xs[0], init)
        if kind == "stacked":
            return self._stacked(node, xs[0], init)
        if kind == "dense":
            return [ACTIVATIONS[cfg["activation"]](self.modules[name](xs[0]))]
        if kind == "embedding":
            return [self.modules[name](xs[0].long())]
        if kind == "activation":
            return [ACTIVATIONS[cfg["activation"]](xs[0])]
        if kind == "time_distributed":  # (B, T, ...) -> (B*T, ...) -> the wrapped layer -> (B, T, ...)
            x = xs[0]
            (y,) = self._node({**node, "type": cfg["inner_type"], "config": cfg["inner"]}, [x.flatten(0, 1)], [])
            return [y.reshape(*x.shape[:2], *y.shape[1:])]
        if kind in ("conv", "pool2d", "global_pool2d"):
            return [self._spatial(node, xs[0])]
        if kind == "upsampling1d":
            return [torch.repeat_interleave(xs[0], cfg["size"], dim=1)]
        if kind == "zero_padding1d":
            x = xs[0] if cfg["data_format"] == "channels_first" else xs[0].transpose(1, 2)
            y = F.pad(x, cfg["padding"])
            return [y if cfg["data_format"] == "channels_first" else y.transpose(1, 2)]
        if kind == "cropping1d":
            start, end = cfg["cropping"]
            return [xs[0][:, start : xs[0].shape[1] - end]]
        if kind == "concatenate":
            return [torch.cat(xs, dim=cfg["axis"])]
        if kind in MERGES:
            rank = max(x.dim() for x in xs)  # Keras inserts axes after the batch axis of lower-rank inputs
            xs = [x.reshape(x.shape[:1] + (1,) * (rank - x.dim()) + x.shape[1:]) for x in xs]
            return [MERGES[kind](xs)]
        if kind in ("batch_normalization", "layer_normalization", "rms_normalization"):
            return [self._normalization(node, xs[0])]
        if kind == "normalization":
            return [self._preprocessing(node, xs[0])]
        if kind == "unit_normalization":
            return [self._l2(xs[0], sorted({a % xs[0].dim() for a in cfg["axis"]}), 1e-12)]
        if kind == "dot":
            return [self._dot(cfg, *xs)]
        if kind in SHAPE_AND_POOLING:
            return [SHAPE_AND_POOLING[kind](xs[0], cfg)]
        if kind == "multi_head_attention":
            return self._multi_head(node, xs)
        if kind == "attention":
            return self._attention(node, xs)
        assert kind == "identity", f"no torch forward for {kind}"
        return [xs[0]]

    def _spatial(self, node: dict, x):
        """A convolution or pooling on channels-first data, padded first as Keras pads."""
        cfg, kind = node["config"], node["type"]
        last = cfg["data_format"] == "channels_last"
        x = x.movedim(-1, 1) if last else x
        if kind == "global_pool2d":
            y = x.amax(dim=(2, 3), keepdim=True) if cfg["mode"] == "max" else x.mean(dim=(2, 3), keepdim=True)
            if not cfg["keepdims"]:
                return y.flatten(1)
        else:
            size = cfg["kernel_size"] if kind == "conv" else cfg["pool_size"]
            dilation = cfg["dilation_rate"] if kind == "conv" else [1] * len(size)
            axes = list(zip(x.shape[2:], size, cfg["strides"], dilation, strict=True))
            pads = [keras_pads(*axis, cfg["padding"]) for axis in axes]
            flat = [p for pair in reversed(pads) for p in pair]  # F.pad wants the last axis first
            if kind == "conv":
                y = self.modules[node["name"]](F.pad(x, flat))
            elif cfg["mode"] == "max":
                y = F.max_pool2d(F.pad(x, flat, value=-np.inf), size, cfg["strides"])
            else:  # TensorFlow leaves the padding out of an average's count
                total = F.avg_pool2d(F.pad(x, flat), size, cfg["strides"], divisor_override=1)
                count = F.avg_pool2d(F.pad(torch.ones_like(x[:1, :1]), flat), size, cfg["strides"], divisor_override=1)
                y = total / count
        y = y.movedim(1, -1) if last else y
        return ACTIVATIONS[cfg["activation"]](y) if kind == "conv" else y

    def _normalization(self, node: dict, x):
        """nn.BatchNorm1d on the normalised axis moved to dim 1; nn.LayerNorm on the normalised axes moved last."""
        axes, module = sorted({a % x.dim() for a in node["config"]["axis"]}), self.modules.get(node["name"])
        if node["type"] == "batch_normalization":
            return module(x.movedim(axes[0], 1)).movedim(1, axes[0])
        last = list(range(x.dim() - len(axes), x.dim()))
        moved = x.movedim(axes, last)
        if module is None:  # no gamma, no beta: nn.functional.layer_norm without weights
            eps = node["config"]["epsilon"]
            return nn.functional.layer_norm(moved, moved.shape[-len(axes) :], eps=eps).movedim(last, axes)
        return module(moved).movedim(last, axes)

    def _preprocessing(self, node: dict, x):
        cfg, prefix = node["config"], node["name"] + "."
        kept = sorted({a % x.dim() for a in cfg["axis"]})
        full = [x.shape[k] for k in kept]
        target = [x.shape[d] if d in kept else 1 for d in range(x.dim())]
        stats = []
        for key in ("mean", "variance"):
            v = self.arrays[prefix + key]
            while v.dim() > len(full) and v.shape[0] == 1:  # a scalar statistic is stored as shape (1,)
                v = v[0]
            stats.append(v.expand(full).reshape(target))
        mean, variance = stats
        denom = torch.clamp(torch.sqrt(variance), min=1e-7)
        return mean + x * denom if cfg["invert"] else (x - mean) / denom

    def _l2(self, x, axes: list[int], epsilon: float):
        square_sum = torch.sum(x * x, dim=axes, keepdim=True)
        if self.keras_major == 2:
            return x * torch.rsqrt(torch.clamp(square_sum, min=1e-12))
        return x * torch.clamp(torch.rsqrt(square_sum), max=1.0 / epsilon)

    def _dot(self, cfg: dict, x, y):
        a = cfg["axes"]
        i, j = (
            ((a[0] % x.dim(), a[0] % y.dim()) if a[0] < 0 else (a[0], a[0]))
            if len(a) == 1
            else (a[0] % x.dim(), a[1] % y.dim())
        )
        if cfg["normalize"]:
            x, y = self._l2(x, [i], 1e-7), self._l2(y, [j], 1e-7)
        out = torch.tensordot  # per sample: contract x's axis i with y's axis j
        result = torch.stack([out(xb, yb, dims=([i - 1], [j - 1])) for xb, yb in zip(x, y, strict=True)])
        return result.reshape(result.shape[0], 1) if result.dim() == 1 else result

    def _recurrent(self, node: dict, x, init: list) -> list:
        cfg, name = node["config"], node["name"]
        bidi = node["type"] == "bidirectional"
        r = cfg["forward"] if bidi else cfg
        if bidi:  # nn's reverse direction is Keras' go_backwards layer; anything else is not Bidirectional
            assert not cfg["forward"]["go_backwards"] and cfg["backward"]["go_backwards"]
        elif r["go_backwards"]:
            x = torch.flip(x, dims=[1])
        lstm, h_units = r["kind"] == "lstm", r["units"]
        start = self._start(init, lstm, bidi) if init else self.states.get(name)
        out, final = self.modules[name](x, start)
        h, c = final if lstm else (final, None)
        if r["stateful"]:
            self.states[name] = final
        if not bidi:
            y = out if r["return_sequences"] else out[:, -1]
            return [y, h[0], c[0]] if lstm and r["return_state"] else [y, h[0]] if r["return_state"] else [y]
        fw, bw = out[..., :h_units], out[..., h_units:]  # bw is aligned with the original time axis
        if not r["return_sequences"]:
            fw, bw = fw[:, -1], bw[:, 0]  # the backward direction ends at time 0
        mode = cfg["merge_mode"]
        merged = {
            "concat": lambda: [torch.cat([fw, bw], dim=-1)],
            "sum": lambda: [fw + bw],
            "ave": lambda: [(fw + bw) / 2],
            "mul": lambda: [fw * bw],
            None: lambda: [fw, bw],
        }[mode]()
        if r["return_state"]:
            merged += [h[0], c[0], h[1], c[1]] if lstm else [h[0], h[1]]
        return merged

    def _stacked(self, node: dict, x, init: list) -> list:
        """RNN(StackedRNNCells) as one multi-layer module: Keras lists cell 0's h (, c), then cell 1's, ...;
        nn takes and gives (num_layers, batch, units) per state."""
        cfg, name = node["config"], node["name"]
        lstm, n = cfg["cells"][0]["kind"] == "lstm", len(cfg["cells"])
        if cfg["go_backwards"]:
            x = torch.flip(x, dims=[1])
        per = 2 if lstm else 1
        if init:
            h = torch.stack([init[k * per] for k in range(n)])
            start = (h, torch.stack([init[k * per + 1] for k in range(n)])) if lstm else h
        else:
            start = self.states.get(name)
        out, final = self.modules[name](x, start)
        if cfg["stateful"]:
            self.states[name] = final
        y = out if cfg["return_sequences"] else out[:, -1]
        if not cfg["return_state"]:
            return [y]
        h, c = final if lstm else (final, None)
        return [y, *[s for k in range(n) for s in ([h[k], c[k]] if lstm else [h[k]])]]

    @staticmethod
    def _causal(tq: int, tv: int):
        return torch.ones(tq, tv, dtype=torch.bool).tril()

    def _multi_head(self, node: dict, xs: list) -> list:
        cfg = node["config"]
        given = dict(zip(cfg["inputs"], xs, strict=True))
        q, v = given["query"], given["value"]
        hidden = ~self._causal(q.shape[1], v.shape[1]) if cfg["use_causal_mask"] else None  # True: not attended
        out, weights = self.modules[node["name"]](
            q, given.get("key", v), v, attn_mask=hidden, need_weights=True, average_attn_weights=False
        )
        return [out, weights] if cfg["return_attention_scores"] else [out]

    def _attention(self, node: dict, xs: list) -> list:
        cfg = node["config"]
        q, v = xs[0], xs[1]
        k = xs[2] if cfg["has_key"] else v
        params = dict(self.modules[node["name"]].named_parameters()) if node["tensors"] else {}
        scale = params.get("scale")
        if cfg["score"] == "dot":
            scores = q @ k.transpose(1, 2) * (scale if scale is not None else 1)
        elif cfg["score"] == "concat":
            summed = q[:, :, None] + k[:, None]
            scores = params["concat_score_weight"] * torch.tanh(summed * (scale if scale is not None else 1)).sum(-1)
        else:
            scores = ((scale if scale is not None else 1) * torch.tanh(q[:, :, None] + k[:, None])).sum(-1)
        if cfg["use_causal_mask"]:
            scores = torch.where(self._causal(q.shape[1], v.shape[1]), scores, scores - 1e9)
        weights = torch.softmax(scores, dim=-1)
        return [weights @ v, weights] if cfg["return_attention_scores"] else [weights @ v]

    @staticmethod
    def _start(init: list, lstm: bool, bidi: bool):
        # Keras lists forward's h (, c) then backward's; nn wants (num_directions, batch, units) per state.
        per = 2 if lstm else 1
        groups = [init[k * per : (k + 1) * per] for k in range(2 if bidi else 1)]
        h = torch.stack([g[0] for g in groups])
        return (h, torch.stack([g[1] for g in groups])) if lstm else h


def test_the_required_fixtures_run_in_both_keras_versions() -> None:
    names = {(fx.name, fx.keras) for fx in RUN}
    assert {(n, k) for n in REQUIRED for k in "23"} <= names
    assert len(RUN) >= 40


@pytest.mark.parametrize("fx", RUN, ids=[fx.id for fx in RUN])
def test_torch_modules_reproduce_keras(fx, tmp_path) -> None:
    torch.set_num_threads(1)
    path = tmp_path / "model.npz"
    write_npz(converter.load(fx.path, config=fx.config).ir, path, layout="pytorch")
    graph = TorchGraph(path)
    calls = (1, 2) if fx.entry["stateful"] else (1,)
    for call in calls:  # a stateful model's second call starts from the first one's final states
        got = graph(fx.inputs(call=call))
        want = fx.outputs(call=call)
        assert len(got) == len(want)
        for g, w in zip(got, want, strict=True):
            assert g.dtype == np.float32
            assert max_abs_error(g, w) <= ATOL
    if fx.entry["stateful"]:  # and the states really mattered
        graph.reset()
        fresh = graph(fx.inputs(call=2))[0]
        assert max_abs_error(fresh, fx.outputs(call=2)[0]) > 1e-3
