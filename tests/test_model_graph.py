"""kexp.models.graph: a functional model's node references, resolved and checked without
TensorFlow."""

from __future__ import annotations

from kexp.config.schema import ModelSpec
from kexp.models.graph import plan_graph


def _spec(layers, inputs=(("a", [3]),), outputs=None) -> ModelSpec:
    data = {"type": "functional", "inputs": [{"name": n, "shape": s} for n, s in inputs],
            "layers": layers}
    if outputs is not None:
        data["outputs"] = outputs
    return ModelSpec.model_validate(data)


def _dense(name, inputs=None):
    layer = {"type": "Dense", "units": 1, "name": name}
    return layer if inputs is None else {**layer, "inputs": inputs}


def test_layers_come_in_call_order_whatever_order_they_are_written_in():
    spec = _spec([_dense("head", "body"), _dense("body", "cat"),
                  {"type": "Concatenate", "name": "cat", "inputs": ["a", "b"]}],
                 inputs=(("a", [3]), ("b", [2])), outputs=["head"])
    plan, problems = plan_graph(spec)
    assert problems == []
    assert [n.key for n in plan.order] == ["cat", "body", "head"]
    assert plan.inputs == ("a", "b") and plan.outputs == ("head",)
    assert plan.order[0].inputs == ("a", "b")


def test_defaults_previous_layer_single_input_and_last_layer_as_output():
    plan, problems = plan_graph(_spec([_dense("one"), {"type": "Dense", "units": 2}]))
    assert problems == []
    assert [(n.key, n.inputs) for n in plan.order] == [("one", ("a",)), ("#1", ("one",))]
    assert plan.outputs == ("#1",)


def test_an_unknown_reference_is_named_with_the_close_one():
    plan, problems = plan_graph(_spec([_dense("features"), _dense("out", "featurs")],
                                      outputs="out"))
    assert plan is None
    [problem] = problems
    assert problem.path == "model.layers[1].inputs" and "'featurs'" in problem.message
    assert problem.suggestion == "'features'"


def test_duplicate_names_missing_inputs_and_unknown_outputs_are_all_reported():
    spec = _spec([_dense("x"), _dense("x")], inputs=(("a", [3]), ("b", [3])),
                 outputs=["y"])
    plan, problems = plan_graph(spec)
    assert plan is None
    assert {p.path for p in problems} == {"model.layers[1].name", "model.layers[0]",
                                          "model.outputs"}


def test_a_cycle_is_reported_with_its_path():
    plan, problems = plan_graph(_spec([_dense("x", "y"), _dense("y", "x")], outputs=["y"]))
    assert plan is None
    assert [(p.path, p.message.rsplit(": ", 1)[1]) for p in problems] == [
        ("model.layers[0].inputs", "x -> y -> x")]


def test_a_base_model_provides_inputs_layers_and_the_default_input():
    spec = ModelSpec.model_validate({"type": "functional", "layers": [_dense("head")],
                                     "outputs": ["head"]})
    plan, problems = plan_graph(spec, base_layers=("features",), base_inputs=("x",),
                                base_outputs=("features",))
    assert problems == [] and plan.inputs == ("x",)
    assert plan.order[0].inputs == ("features",)



def test_a_call_node_comes_after_the_layer_it_calls_again():
    spec = _spec([{"call": "enc", "inputs": "b", "name": "b_vec"}, _dense("enc", "a"),
                  {"type": "Subtract", "name": "diff", "inputs": ["enc", "b_vec"]}],
                 inputs=(("a", [3]), ("b", [3])), outputs="diff")
    plan, problems = plan_graph(spec)
    assert problems == []
    assert [(n.key, n.inputs, n.calls) for n in plan.order] == [
        ("enc", ("a",), None), ("b_vec", ("b",), "enc"), ("diff", ("enc", "b_vec"), None)]


def test_a_call_that_closes_a_cycle_is_reported():
    # b_vec calls `late`, which is computed from b_vec: no order can build it first
    spec = _spec([{"call": "late", "name": "b_vec"}, _dense("late", "b_vec")],
                 outputs="late")
    plan, problems = plan_graph(spec)
    assert plan is None
    [problem] = problems
    assert "`inputs:` and `call:` form a cycle" in problem.message
    assert problem.message.endswith("b_vec -> late -> b_vec")


def test_a_call_may_name_a_base_layer_but_not_a_base_input():
    spec = ModelSpec.model_validate({"type": "functional", "layers": [
        {"call": "features", "inputs": "x", "name": "again"},
        {"call": "x", "inputs": "features", "name": "bad"}], "outputs": ["again"]})
    plan, problems = plan_graph(spec, base_layers=("x", "features"), base_inputs=("x",),
                                base_outputs=("features",))
    assert [(p.path, "model input" in p.message) for p in problems] == [
        ("model.layers[1].call", True)]


def _shared(kind, args, shapes):
    layers = [{"type": kind, "name": "enc", "inputs": "a", **args},
              {"call": "enc", "inputs": "b", "name": "b_vec"},
              {"call": "b_vec", "inputs": "c", "name": "c_vec"}]  # a call of a call
    return plan_graph(_spec(layers, inputs=tuple(zip("abc", shapes, strict=True)),
                            outputs=["enc", "c_vec"]))


def test_a_shared_layer_on_a_model_input_of_another_last_axis_is_refused():
    plan, problems = _shared("Dense", {"units": 2}, ([16], [16], [8]))
    assert plan is None
    [problem] = problems
    assert problem.path == "model.layers[2].inputs"
    assert problem.message.startswith("'c' has shape [8], but the Dense layer 'enc' that "
                                      "`call: b_vec` calls again was built for 'a', of shape "
                                      "[16]")
    assert _shared("Dense", {"units": 2}, ([16], [None], [16]))[1] == []  # unknown: fits
    # another size, same channels: a convolution takes it; one with its channels first,
    # or a layer kexp does not size, is left to Keras
    assert _shared("Conv2D", {"filters": 2, "kernel_size": 3},
                   ([32, 32, 3], [64, 64, 3], [8, 8, 3]))[1] == []
    assert len(_shared("Conv2D", {"filters": 2, "kernel_size": 3},
                       ([32, 32, 3], [32, 32, 1], [32, 32]))[1]) == 2
    assert _shared("Conv2D", {"filters": 2, "kernel_size": 3, "data_format": "channels_first"},
                   ([3, 32, 32], [3, 32, 64], [3, 32, 32]))[1] == []
    assert _shared("Flatten", {}, ([16], [8], [4]))[1] == []
