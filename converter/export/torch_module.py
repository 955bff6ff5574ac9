"""Generate the PyTorch source of an IR model: one ``nn.Module`` class mirroring the Keras graph.

One attribute per Keras layer with weights, named after it (``self.lstm = nn.LSTM(3, 5, batch_first=True)``),
whose ``state_dict`` is the model's pytorch layout (``converter.export.layouts``); weightless layers are a
few lines of ``forward`` under a comment naming them. Each layer op writes its own code
(``Op.torch_module``, ``Op.torch_forward`` in ``converter.layers``); this module walks the model as
``onnx_graph`` does, keeping each Keras tensor's variable name and its mask's (None where it has none,
known while generating). Nothing here imports torch: the output is text.
"""

from __future__ import annotations

import builtins
import keyword
import re
from dataclasses import dataclass, field

from converter import __version__, ir
from converter.export.layouts import node_tensors
from converter.layers.base import LayoutTensor, Shape, TorchContext
from converter.layers.pycode import plain  # names from the file never end a comment or docstring

#: Names a layer attribute must not take: nn.Module's own (``dir(nn.Module)`` of torch 2.13, and the
#: ``training`` flag), and the generated class's.
_MODULE_NAMES = frozenset(
    " ".join(
        [
            "T_destination add_module apply bfloat16 buffers call_super_init children compile cpu cuda double",
            "dump_patches eval extra_repr float forward get_buffer get_extra_state get_parameter get_submodule",
            "half ipu load_state_dict modules mtia named_buffers named_children named_modules named_parameters",
            "parameters register_backward_hook register_buffer register_forward_hook register_forward_pre_hook",
            "register_full_backward_hook register_full_backward_pre_hook register_load_state_dict_post_hook",
            "register_load_state_dict_pre_hook register_module register_parameter register_state_dict_post_hook",
            "register_state_dict_pre_hook requires_grad_ set_extra_state set_submodule share_memory state_dict",
            "to to_empty train type xpu zero_grad training states reset_states",
        ]
    ).split()
)
#: Names a variable of ``forward`` must not take: what the file imports and defines.
_FILE_NAMES = frozenset({"self", "torch", "nn", "F", "Path", "load"})


def identifier(label: str) -> str:
    """A Python identifier made from a Keras name: ``encoder/lstm`` -> ``encoder_lstm``.

    >>> identifier("encoder/lstm"), identifier("1st layer"), identifier("class"), identifier("__x")
    ('encoder_lstm', 'layer_1st_layer', 'class_', 'x')
    """
    name = re.sub(r"\W+", "_", label, flags=re.ASCII).strip("_") or "x"
    if name[0].isdigit():
        name = f"layer_{name}"
    if keyword.iskeyword(name) or keyword.issoftkeyword(name) or hasattr(builtins, name):
        name += "_"
    return name


@dataclass
class Names:
    """Unique names in one namespace: ``lstm``, ``lstm_1``, ..."""

    taken: set[str] = field(default_factory=set)

    def new(self, label: str) -> str:
        base = identifier(label)
        candidate, k = base, 0
        while candidate in self.taken:
            k += 1
            candidate = f"{base}_{k}"
        self.taken.add(candidate)
        return candidate


@dataclass
class TorchSource:
    """The generated file's text, its class, and the tensors of its state_dict (lazily built arrays)."""

    text: str
    class_name: str
    tensors: list[LayoutTensor]


def class_name_for(stem: str) -> str:
    """``my_model`` -> ``MyModel``: the class is named after the file.

    >>> class_name_for("tutorial"), class_name_for("bidi-concat"), class_name_for("3")
    ('Tutorial', 'BidiConcat', 'Model3')
    """
    words = re.findall(r"[A-Za-z0-9]+", stem)
    name = "".join(w[:1].upper() + w[1:] for w in words) or "KerasModel"
    return f"Model{name}" if name[0].isdigit() else name


def build_torch_source(model: ir.Model, class_name: str, weights_name: str, source: str) -> TorchSource:
    """The PyTorch source computing what ``model`` computes, and the tensors of its weights file.

    Raises ``UnsupportedLayer`` for a layer torch's modules cannot compute exactly (before anything is made).

    >>> import converter
    >>> src = build_torch_source(converter.load("fixtures/keras3/tutorial.keras").ir, "Tutorial", "t.safetensors", "t")
    >>> print(src.text.split("super().__init__()")[1].split("def forward")[0].strip())
    self.lstm = nn.LSTM(3, 5, batch_first=True)  # LSTM
            self.dense = nn.Linear(5, 1)  # Dense
    """
    for node in model.nodes:  # refuse before anything is made
        node.layer.check_torch_source(node)
    walk = _Walk(model)
    walk.run()
    tensors = []
    for node in model.nodes:
        attribute = walk.attributes.get(node.name)
        if node.weights_of:
            continue
        if attribute is not None:  # keys as the attribute names the module
            tensors += node.layer.torch_weights(attribute)
        elif node_tensors(node, "pytorch"):  # a layer op with weights but no torch module: a bug, not bad input
            raise RuntimeError(f"layer '{node.name}' gave no torch module; its weights would be lost")
    return TorchSource(_file(model, walk, class_name, weights_name, source), class_name, tensors)


class _Walk:
    """One pass over the nodes: the constructor lines, the forward lines, the helpers they use."""

    def __init__(self, model: ir.Model) -> None:
        self.model = model
        self.vars = Names(set(_FILE_NAMES))
        self.attrs = Names(set(_MODULE_NAMES))
        self.attributes: dict[str, str] = {}  # node name -> its module attribute
        self.init: list[str] = []
        self.body: list[str] = []
        self.helpers: dict[str, str] = {}
        self.values: dict[ir.TensorRef, str] = {}
        self.masks: dict[ir.TensorRef, str | None] = {}
        self.shapes: dict[ir.TensorRef, Shape] = {}
        self.inputs: list[str] = []
        self.stateful = False

    def run(self) -> None:
        for spec in self.model.inputs:
            ref = ir.TensorRef(spec.name, 0)
            self.values[ref], self.masks[ref], self.shapes[ref] = self.vars.new(spec.name), None, spec.shape
            self.inputs.append(self.values[ref])
        for node in self.model.nodes:
            self._node(node)

    def _node(self, node: ir.Node) -> None:
        layer = node.layer
        xs = [self.values[r] for r in node.inputs]
        ms = [self.masks[r] for r in node.inputs]
        shapes = [self.shapes[r] for r in node.inputs]
        g = TorchContext(node, self.model.keras_major, "", shapes, [self.values[r] for r in node.initial_state])
        g.new_name, g.helpers = self.vars.new, self.helpers
        if node.weights_of:  # a later call of a shared layer: the same module
            g.module = f"self.{self.attributes[node.weights_of]}"
            self.attributes[node.name] = self.attributes[node.weights_of]
        else:
            constructor = layer.torch_module(g)
            if constructor is not None:
                attribute = self.attrs.new(node.name)
                self.attributes[node.name] = attribute
                g.module = f"self.{attribute}"
                self.init.append(f"self.{attribute} = {constructor}  # {plain(node.keras_class)}")
        lines = [f"# {plain(node.name)} ({plain(node.keras_class)})" + (" again" if node.weights_of else "")]
        flowing = ms[0]
        if node.mask is not None:  # an explicit mask= replaces the propagated one (like the runtime)
            given = g.var("given_mask")
            lines.append(f"{given} = {self.values[node.mask]}.bool()")
            ms[0] = given
        elif not node.receives_mask:  # computes unmasked; its outputs still carry the flowing mask
            ms[0] = None
        out_shapes = layer.output_shapes(shapes)
        outs = [self.vars.new(node.name if k == 0 else f"{node.name}_{k}") for k in range(len(out_shapes))]
        code, out_masks = layer.torch_forward(g, outs, xs, ms)
        if not node.receives_mask:
            carrying = layer.mask_carrying_outputs()
            out_masks = [flowing if k < carrying else None for k in range(len(outs))]
        self.stateful = self.stateful or layer.keeps_states()
        self.body += [*lines, *code]
        for k, (out, mask, shape) in enumerate(zip(outs, out_masks, out_shapes, strict=True)):
            ref = ir.TensorRef(node.name, k)
            self.values[ref], self.masks[ref], self.shapes[ref] = out, mask, shape


def _shape_text(shape: Shape, batch: int | None) -> str:
    dims = ["batch" if batch is None else str(batch), *("time" if d is None else str(d) for d in shape)]
    return f"({', '.join(dims)})"


def _file(model: ir.Model, walk: _Walk, class_name: str, weights_name: str, source: str) -> str:
    inputs = ", ".join(f"{name}: torch.Tensor" for name in walk.inputs)
    outputs = [walk.values[ref] for ref in model.outputs]
    returns = "torch.Tensor" if len(outputs) == 1 else f"tuple[{', '.join(['torch.Tensor'] * len(outputs))}]"
    arg_doc = [
        f"            {name}: {'int64 ids' if spec.dtype != 'float32' else 'float32'} "
        f"{_shape_text(spec.shape, spec.batch_size)} (Keras input '{plain(spec.name)}')"
        for name, spec in zip(walk.inputs, model.inputs, strict=True)
    ]
    out_doc = ", ".join(f"'{plain(n)}'" for n in model.output_names)
    init = [f"        {line}" for line in walk.init]
    if walk.stateful:
        init.append("        self.states: dict = {}  # stateful layers' states, carried from call to call")
    body = [f"        {line}" for line in walk.body]
    body.append(f"        return {', '.join(outputs)}")
    source, weights_text = plain(source), plain(weights_name)
    text = [
        f'"""{class_name}: the Keras model {source} as a PyTorch module, generated by lstm-convert {__version__}.',
        "",
        f"It computes what the Keras model (Keras {plain(model.keras_version)}) computes, masks included; the weights",
        f"are {weights_text} beside this file. Usage:",
        "",
        f"    model = load()  # {class_name} with its weights, in eval mode",
        "    with torch.no_grad():",
        f"        outputs = model({', '.join(walk.inputs)})",
        '"""',
        "",
        "from pathlib import Path",
        "",
        "import torch",
        "from torch import nn",
    ]
    helpers = "\n\n".join(walk.helpers.values())
    uses_f = "F." in "\n".join(body) or "F." in helpers
    if uses_f:
        text.append("from torch.nn import functional as F")
    text += ["", ""]
    if helpers:
        text += [helpers, ""]
    text += [
        f"class {class_name}(nn.Module):",
        f'    """The Keras model {plain(model.name) if model.name else source}, layer by layer; outputs {out_doc}."""',
        "",
        "    def __init__(self) -> None:",
        "        super().__init__()",
        *init,
        "",
    ]
    if walk.stateful:
        text += [
            "    def reset_states(self) -> None:",
            '        """Forget the states stateful layers carried over from earlier calls (like Keras)."""',
            "        self.states.clear()",
            "",
        ]
    text += [
        f"    def forward(self, {inputs}) -> {returns}:",
        '        """Args:',
        *arg_doc,
        '        """',
        *body,
        "",
        "",
        f"def load(weights: str | Path | None = None) -> {class_name}:",
        f'    """{class_name} with its weights (``{weights_text}`` beside this file by default), in eval mode."""',
        "    try:",
        "        from safetensors.torch import load_file",
        "    except ImportError:",
        '        raise ImportError("the weights need the safetensors package: pip install safetensors") from None',
        f"    model = {class_name}()",
        f"    path = Path(__file__).with_name({weights_name!r}) if weights is None else weights",
        "    model.load_state_dict(load_file(str(path)), strict=True)",
        "    return model.eval()",
        "",
    ]
    return "\n".join(text)
