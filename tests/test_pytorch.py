"""The pytorch layout loads into real torch.nn modules (strict load_state_dict) that reproduce Keras' outputs.

The torch graph is built from the exported npz alone: its ``__model__`` description gives the layers and
wiring, its arrays the state dicts. Keras semantics that plain modules lack are applied around them:
go_backwards flips the input (Keras returns the sequence in processing order), Bidirectional's last output
of the backward direction is its output at time 0, merge modes, return_state, initial_state and stateful
states. Masked fixtures are left out: nn.LSTM/GRU/RNN have no per-step mask (packed sequences only handle
post-padding, and Keras also skips pre-padded and interior steps).
"""

from __future__ import annotations

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
ACTIVATIONS = {
    "linear": lambda x: x,
    "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
    "relu": torch.relu,
    "softmax": lambda x: torch.softmax(x, dim=-1),
}


class TorchGraph:
    """A Keras graph run with torch.nn modules, built from an lstm-convert npz in the pytorch layout."""

    def __init__(self, path: Path) -> None:
        with np.load(path, allow_pickle=False) as data:
            self.doc = json.loads(str(data["__model__"]))
            arrays = {k: torch.from_numpy(data[k]) for k in data.files if k != "__model__"}
        assert self.doc["layout"] == "pytorch"
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
        if node["type"] in ("recurrent", "bidirectional"):
            r = cfg if node["type"] == "recurrent" else cfg["forward"]
            extra = {"nonlinearity": r["activation"]} if r["kind"] == "simple_rnn" else {}
            return MODULES[r["kind"]](
                r["input_dim"], r["units"], bias=r["use_bias"], batch_first=True,
                bidirectional=node["type"] == "bidirectional", **extra,
            )  # fmt: skip
        if node["type"] == "dense":
            fan_in = node["tensors"][0]["shape"][1]
            return nn.Linear(fan_in, cfg["units"], bias=cfg["use_bias"])
        if node["type"] == "embedding":
            return nn.Embedding(cfg["input_dim"], cfg["output_dim"])
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
        if kind == "dense":
            return [ACTIVATIONS[cfg["activation"]](self.modules[name](xs[0]))]
        if kind == "embedding":
            return [self.modules[name](xs[0].long())]
        if kind == "activation":
            return [ACTIVATIONS[cfg["activation"]](xs[0])]
        if kind == "concatenate":
            return [torch.cat(xs, dim=cfg["axis"])]
        if kind == "add":
            return [sum(xs[1:], xs[0])]
        if kind == "multi_head_attention":
            return self._multi_head(node, xs)
        if kind == "attention":
            return self._attention(node, xs)
        assert kind == "identity", f"no torch forward for {kind}"
        return [xs[0]]

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
