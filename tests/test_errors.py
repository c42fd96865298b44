"""kexp/errors.py: problems as one line each, and the one line of a Keras or TensorFlow error."""

from __future__ import annotations

from kexp.errors import ConfigError, Problem, error_line


def test_error_line_drops_keras_wrapping_and_terminal_codes():
    exc = ValueError("Exception encountered when calling Conv2D.call().\n\n"
                     "\x1b[1mInput 0 of layer \"conv2d\" is incompatible with the layer: "
                     "expected ndim=4, found ndim=2.\x1b[0m\n\nArguments received ...")
    assert error_line(exc) == ('Input 0 of layer "conv2d" is incompatible with the layer: '
                               "expected ndim=4, found ndim=2.")


def test_error_line_drops_tensorflow_op_decorations():
    exc = RuntimeError("{{function_node __wrapped__DecodePng}} Invalid PNG header "
                       "[Op:DecodePng] name: x\nmore")
    assert error_line(exc) == "Invalid PNG header"


def test_error_line_of_an_empty_message_is_the_type():
    assert error_line(KeyError()) == "KeyError"


def test_a_config_error_lists_every_problem_with_its_place():
    error = ConfigError([Problem("train.epoch", "unknown key 'epoch'", "c.yaml:3:3", "'epochs'"),
                         Problem("data", "this key is required")])
    assert str(error) == ("config error: 2 problems\n"
                          "  - c.yaml:3:3: train.epoch: unknown key 'epoch'; did you mean "
                          "'epochs'?\n"
                          "  - data: this key is required")
