"""What a written ONNX graph asks of a runtime beyond the ONNX spec's letter, read from the file alone.

Two things differ between runtimes (FACTS.md, "Other ONNX runtimes"):

- recurrent ``activations`` other than Sigmoid, Tanh and Relu: onnxruntime computes them, OpenVINO
  refuses them, onnx's ReferenceEvaluator ignores the attribute (it always uses the defaults);
- ``sequence_lens``: the graph never reads ``Y`` past a row's length, so only the final ``c`` of a masked
  LSTM (``Y_c``, read by a later node) depends on it. onnxruntime honours it, OpenVINO 2026.4 only when
  every input shape is fixed (a symbolic batch or time axis makes it run all steps), the
  ReferenceEvaluator never.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from converter.errors import BadOptions
from converter.layers.recurrent.onnx_weights import PORTABLE_ACTIVATIONS

RECURRENT_OPS = ("LSTM", "GRU", "RNN")


@dataclass
class Portability:
    """Per concern, the recurrent nodes of the graph it applies to (by node name)."""

    #: layer (node name without its op) -> activations it uses outside Sigmoid/Tanh/Relu
    other_activations: dict[str, list[str]] = field(default_factory=dict)
    #: nodes whose written activations are not the defaults (the ReferenceEvaluator ignores them)
    explicit_activations: list[str] = field(default_factory=list)
    #: masked LSTM nodes whose final c (Y_c) is read: exact only where sequence_lens is honoured
    needs_sequence_lens: list[str] = field(default_factory=list)
    static_shapes: bool = False  # every input dimension fixed (OpenVINO then honours sequence_lens)

    def notes(self) -> list[str]:
        """The lines the verify report and the CLI show about other runtimes."""
        notes = []
        if self.other_activations:
            used = sorted({a for acts in self.other_activations.values() for a in acts})
            notes.append(
                f"recurrent activations {', '.join(used)} (in {', '.join(self.other_activations)}) are computed by "
                "onnxruntime only: OpenVINO refuses them and onnx's ReferenceEvaluator ignores them"
            )
        if self.needs_sequence_lens:
            notes.append(
                f"the final c state of masked LSTM {', '.join(self.needs_sequence_lens)} is exact only in runtimes "
                "that honour sequence_lens (onnxruntime, and OpenVINO when every input shape is fixed: --batch-size "
                "N), not in onnx's ReferenceEvaluator or OpenVINO with a symbolic batch or time axis"
            )
        return notes

    def refusal(self, runtime: str) -> str | None:
        """Why ``runtime`` cannot verify this graph exactly, or None."""
        if runtime == "openvino":
            if self.other_activations:
                node, acts = next(iter(self.other_activations.items()))
                return (
                    f"OpenVINO refuses the recurrent activation {acts[0]} of layer '{node}' "
                    "(it computes Sigmoid, Tanh and Relu)"
                )
            if self.needs_sequence_lens and not self.static_shapes:
                return (
                    f"OpenVINO ignores sequence_lens unless every input shape is fixed, and the final c state of "
                    f"masked LSTM '{self.needs_sequence_lens[0]}' needs it; export with --batch-size N (and a fixed "
                    "time length) to verify it there"
                )
        if runtime == "reference":
            if self.explicit_activations:
                return (
                    f"onnx's ReferenceEvaluator ignores the activations of layer '{self.explicit_activations[0]}' "
                    "(it always computes sigmoid/tanh)"
                )
            if self.needs_sequence_lens:
                return (
                    f"onnx's ReferenceEvaluator ignores sequence_lens, which the final c state of masked LSTM "
                    f"'{self.needs_sequence_lens[0]}' needs"
                )
        return None


def portability(path: Path) -> Portability:
    """Read ``path`` (without its external weights) and find what other runtimes would do differently."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    consumed = {name for node in graph.node for name in node.input} | {o.name for o in graph.output}
    found = Portability()
    found.static_shapes = all(d.HasField("dim_value") for i in graph.input for d in i.type.tensor_type.shape.dim)
    for node in graph.node:
        if node.op_type not in RECURRENT_OPS:
            continue
        acts = [a.decode() for attr in node.attribute if attr.name == "activations" for a in attr.strings]
        layer = node.name.rsplit("/", 1)[0]  # "lstm/LSTM": the node of layer "lstm"
        if acts:
            found.explicit_activations.append(layer)
        other = sorted({a for a in acts if a not in PORTABLE_ACTIVATIONS})
        if other:
            found.other_activations[layer] = other
        has_lens = len(node.input) > 4 and bool(node.input[4])
        if node.op_type == "LSTM" and has_lens and len(node.output) > 2 and node.output[2] in consumed:
            found.needs_sequence_lens.append(layer)
    return found


def check_runtimes(path: Path, runtimes: list[str], where: str) -> Portability:
    """Refuse (``BadOptions``, one line naming ``where`` and the reason) a runtime that cannot verify the
    graph at ``path`` exactly."""
    found = portability(path)
    for runtime in runtimes:
        why = found.refusal(runtime)
        if why is not None:
            raise BadOptions(f"{where}: cannot verify in --runtime {runtime}: {why}.")
    return found
