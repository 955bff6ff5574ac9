"""Verify a written ``.onnx`` file: several calls in one session, every output, in one or more runtimes.

Per runtime (onnxruntime always, then each ``--runtime``), one session runs:

1. a fresh call (state inputs zero), compared with the original;
2. the same call again (onnxruntime 1.14-1.18 got a masked Bidirectional LSTM wrong from the second call
   on, which a single call cannot see);
3. for a graph with state inputs, a call fed call 1's final states, compared with the original's second
   call: Keras itself for a stateful model (its layers carry their states), else the NumPy runtime fed the
   same states.

State outputs that are no Keras output (``--state-io``, stateful layers) are compared with the NumPy
runtime's final states (the runtime is proven against Keras by the test suite).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from converter import ir
from converter.export.onnx_graph import graph_output_names
from converter.verification import OutputCheck, Outputs, compare

Array = np.ndarray


@dataclass
class Expected:
    """What each call of the written graph must give, by graph output name."""

    feeds: dict[str, Array]
    first: Outputs
    second: Outputs | None  # after feeding call 1's final states; None without state inputs
    labels: dict[str, str]  # graph name -> the name the report shows (Keras' for Keras outputs)
    state_inputs: list[str] = field(default_factory=list)
    state_outputs: list[str] = field(default_factory=list)  # added to the Keras outputs
    notes: list[str] = field(default_factory=list)


def state_carrying(model: ir.Model, state_inputs: list[str]) -> list[ir.Node]:
    """The nodes whose states the graph takes as inputs."""
    from converter.states import split_name

    fed = {split_name(name)[0] for name in state_inputs}
    return [node for node in model.recurrent_nodes if node.name in fed]


def keras_streams(model: ir.Model, state_inputs: list[str]) -> bool:
    """Keras' own second call is the fed-states call: every layer with state inputs is stateful."""
    nodes = state_carrying(model, state_inputs)
    return bool(nodes) and all(node.layer.keeps_states() for node in nodes)


def expectations(
    model: ir.Model,
    feeds: dict[str, Array],
    original: list[Outputs],
    state_inputs: list[str],
    state_outputs: list[str],
    oracle: str,
) -> Expected:
    """``original``: the oracle's first call and, when ``keras_streams``, its second call."""
    from converter.runtime import Runtime
    from converter.states import flat_states

    names = graph_output_names(model)
    labels = dict(zip(names, model.output_names, strict=True))
    runtime = Runtime(model)
    _, finals = runtime.run(feeds)
    states = flat_states(model, finals)
    first = {g: original[0][k] for g, k in labels.items()} | {n: states[n] for n in state_outputs}
    notes = []
    if state_outputs:
        notes.append(f"state outputs {', '.join(state_outputs)} are checked against the NumPy runtime")
    fed = ", and a call fed the first call's final states" if state_inputs else ""
    notes.append(f"every output is checked on a fresh call, the same call again{fed}")
    second = None
    if state_inputs:
        fed = {node.name: finals[node.name] for node in state_carrying(model, state_inputs)}
        outputs, finals_2 = runtime.run(feeds, initial_states=fed)
        states_2 = flat_states(model, finals_2)
        if len(original) > 1:
            second = {g: original[1][k] for g, k in labels.items()}
        else:
            second = dict(zip(names, outputs, strict=True))
            if not oracle.startswith("numpy"):
                notes.append("the call fed states is checked against the NumPy runtime fed the same states")
        second |= {n: states_2[n] for n in state_outputs}
    return Expected(feeds, first, second, labels, state_inputs, state_outputs, notes)


def check_written(
    path: Path, expected: Expected, runtimes: list[str], atol: float, rtol: float, where: str, lean: bool = False
) -> tuple[list[OutputCheck], list[str]]:
    """Run ``path`` in onnxruntime and each of ``runtimes``; the checks of every call, and notes on
    what other runtimes would do (``converter.export.onnx_portability``)."""
    from converter.export.onnx_portability import check_runtimes
    from converter.export.onnx_run import Runner

    found = check_runtimes(path, runtimes, where)
    checks: list[OutputCheck] = []
    for runtime in ["onnxruntime", *(r for r in runtimes if r != "onnxruntime")]:
        runner = Runner.open(path, runtime, lean=lean)
        tag = "" if runtime == "onnxruntime" else f"[{runtime}] "
        got = runner.run(expected.feeds)
        checks += _labelled(compare(expected.first, got, atol, rtol), expected, tag, "")
        again = runner.run(expected.feeds)
        checks += _labelled(compare(expected.first, again, atol, rtol), expected, tag, " (again)")
        if expected.second is not None:
            fed = runner.run({**expected.feeds, **runner.next_states(got)})
            suffix = " (fed states)"
            checks += _labelled(compare(expected.second, fed, atol, rtol), expected, tag, suffix)
    return checks, [*expected.notes, *found.notes()]


def _labelled(checks: list[OutputCheck], expected: Expected, tag: str, suffix: str) -> list[OutputCheck]:
    for check in checks:
        base, sep, rest = check.name.partition(" (shape")
        check.name = f"{tag}{expected.labels.get(base, base)}{suffix}{sep}{rest}"
    return checks
