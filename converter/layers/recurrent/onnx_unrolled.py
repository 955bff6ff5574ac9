"""A SimpleRNN over a fixed number of steps as plain ops, unrolled: faster than onnxruntime's fused RNN.

onnxruntime's ``RNN`` kernel (``core/providers/cpu/rnn/rnn.cc``) already computes the input projection of
all steps as one GEMM and each step's ``h @ R^T`` as one GEMM, but then applies the activation element by
element through a ``std::function`` (scalar ``tanh``, one thread). Measured (onnxruntime 1.32, 2 threads,
the benchmark's 2 x SimpleRNN(256) on 100 steps of 64 features): batch 64 62 ms with tanh, 26 ms with the
same node's activation set to Relu, so ~60 % of the node is that scalar tanh; tf2onnx's Loop graph takes
25 ms. The same layer as one MatMul for the input projection of all steps, then per step MatMul + Add +
Tanh (onnxruntime's vectorised, threaded Tanh) takes 21 ms at batch 64 and 1.43 ms at batch 1 (fused
RNN 1.65 ms, Loop 3.0 ms), equal to the fused node within 3e-6.

Only where that is what was measured: one direction, the default tanh (other activations stay on the
fused node, whose behaviour in other runtimes the README tabulates), a time axis fixed when the graph is
built, and at most ``MAX_STEPS`` steps (3 nodes a step). Nothing here reads ``sequence_lens``: callers read
``Y`` before each row's length only, so steps past it (computed on padding) are never seen.
"""

from __future__ import annotations

from converter.export.onnx_builder import Builder
from converter.layers.recurrent.layer import Recurrent

#: Longest sequence unrolled (3 nodes a step): the measured case is 100 steps; a graph stays small.
MAX_STEPS = 128


def unrolls(layer: Recurrent, count: int, steps: int | None, keras_major: int) -> bool:
    """Whether this one-direction layer becomes the unrolled chain instead of a fused RNN node."""
    from converter.activations import onnx_activation

    if layer.kind != "simple_rnn" or count != 1 or steps is None or not 1 <= steps <= MAX_STEPS:
        return False
    act = onnx_activation(layer.activation or "linear", keras_major)
    return act is not None and act.op == "Tanh" and act.alpha is None


def unrolled_rnn(b: Builder, t: str, layer: Recurrent, x_tbi: str, h0: str, steps: int) -> tuple[str, str]:
    """``Y`` (T, 1, B, H) and ``Y_h`` (1, B, H) of ONNX's RNN, from time-major ``x_tbi`` (T, B, in).

    ``h0``: the (1, B, H) initial state, or "" for zeros. h_t = tanh(x_t @ W + b + h_{t-1} @ U), Keras'
    own layout (kernel (in, H), recurrent kernel (H, H), one bias), so no weight is transposed.
    """
    kernel = b.weight(f"{t}/kernel", layer.tensor("W", ""))
    recurrent = b.weight(f"{t}/recurrent_kernel", layer.tensor("U", ""))
    projected = b.op("MatMul", [x_tbi, kernel], f"{t}/x_kernel")  # one GEMM over (T*B, in)
    if layer.use_bias:
        projected = b.op("Add", [projected, b.weight(f"{t}/bias", layer.tensor("b", ""))], f"{t}/x_projected")
    # Split with sizes as an input is the same op from opset 13 to 28 (num_outputs exists only from 18).
    names = [f"{t}/x_{k}" for k in range(steps)]
    parts = b.op_n("Split", [projected, b.i64(*[1] * steps)], f"{t}/x_steps", names, axis=0)
    h, hs = h0, []
    for k, part in enumerate(parts):
        pre = part
        if h:
            pre = b.op("Add", [part, b.op("MatMul", [h, recurrent], f"{t}/h_{k}_recurrent")], f"{t}/h_{k}_pre")
        h = b.op("Tanh", [pre], f"{t}/h_{k}")
        hs.append(h)
    y = b.op("Concat", hs, f"{t}/Y_steps", axis=0) if len(hs) > 1 else hs[0]
    return b.unsqueeze(y, [1], f"{t}/Y"), b.op("Identity", [h], f"{t}/Y_h")
